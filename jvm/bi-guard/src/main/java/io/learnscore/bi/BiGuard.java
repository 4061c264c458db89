package io.learnscore.bi;

import java.util.Arrays;
import java.util.Set;
import java.util.stream.Collectors;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.execution.command.SetCommand;
import org.apache.spark.sql.execution.datasources.HadoopFsRelation;
import org.apache.spark.sql.execution.datasources.LogicalRelation;
import scala.Function1;
import scala.Option;
import scala.Tuple2;
import scala.collection.Iterator;
import scala.runtime.BoxedUnit;

/**
 * Spark SQL extension of the BI server ({@code spark.sql.extensions}): once {@link #lock()} is
 * called (after the server has defined its views), every statement is checked before it runs.
 *
 * <ul>
 *   <li>Queries may read only the BI tables' folders (what the {@code bi} views read): a table
 *       or file path elsewhere ({@code delta.`/lake/silver/...`}, {@code text.`/etc/...`}) is
 *       refused, and so is any other kind of relation.
 *   <li>Commands are refused but for looking around (SHOW, DESCRIBE, USE, reading a SET):
 *       no INSERT, UPDATE, DELETE, MERGE, CREATE, DROP, CACHE, ADD JAR or changed setting.
 *   <li>{@code reflect} / {@code java_method} (static Java calls from SQL) are refused.
 * </ul>
 *
 * <p>An allow-list, so that a statement Spark adds later is refused until someone looks at it.
 * The server's own session defines the views before the lock; nothing unlocks it. Files are
 * judged, not views: Spark also checks a view's body on its own while resolving it.
 */
public final class BiGuard implements Function1<SparkSessionExtensions, BoxedUnit> {
  static final String SCHEMA = "bi";
  private static volatile boolean locked = false;
  private static volatile Set<String> readable = Set.of();

  private static final Set<String> LOOKING_AROUND = Set.of(
      "ShowTables", "ShowTablesCommand", "ShowTablesExtended", "ShowNamespaces", "ShowNamespacesCommand",
      "ShowColumns", "ShowColumnsCommand", "ShowViews", "ShowViewsCommand", "ShowFunctions",
      "ShowFunctionsCommand", "DescribeRelation", "DescribeTableCommand", "DescribeColumn",
      "DescribeColumnCommand", "DescribeNamespace", "DescribeDatabaseCommand", "DescribeFunction",
      "DescribeFunctionCommand", "SetCatalogAndNamespace", "SetCatalogCommand", "SetNamespaceCommand",
      "SetCommand", "ShowCurrentNamespace", "ShowCurrentNamespaceCommand");
  // Leaves that read no table or file: constants, ranges, CTE references, and RDD-backed frames,
  // which SQL text cannot make (Delta builds them from its own log while reading a BI table).
  private static final Set<String> SAFE_LEAVES = Set.of(
      "OneRowRelation", "LocalRelation", "Range", "CTERelationRef", "EmptyRelation", "LogicalRDD",
      "ExternalRDD");
  private static final Set<String> REFUSED_EXPRESSIONS = Set.of("CallMethodViaReflection");

  /**
   * From now on, check every statement; {@code folders}: the BI tables' folders, one per line
   * (the BI server calls it once its views exist).
   */
  public static synchronized void lock(String folders) {
    if (locked) {
      throw new IllegalStateException("the BI guard is locked already");
    }
    readable = Arrays.stream(folders.split("\n")).filter(f -> !f.isBlank()).map(BiGuard::normal)
        .collect(Collectors.toUnmodifiableSet());
    locked = true;
  }

  @Override
  @SuppressWarnings({"unchecked", "rawtypes"})
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    Function1<Object, Function1<LogicalPlan, BoxedUnit>> builder = session -> plan -> {
      if (locked) {
        check(plan);
      }
      return BoxedUnit.UNIT;
    };
    extensions.injectCheckRule((Function1) builder);
    return BoxedUnit.UNIT;
  }

  static void check(LogicalPlan plan) {
    String name = plan.getClass().getSimpleName();
    if (plan instanceof Command) {
      if (!LOOKING_AROUND.contains(name) || changesASetting(plan)) {
        throw refused("the BI server is read-only: " + describe(name) + " is not allowed");
      }
      return;
    }
    walk(plan);
  }

  private static void walk(LogicalPlan node) {
    Iterator<Expression> expressions = node.expressions().iterator();
    while (expressions.hasNext()) {
      refuseExpressions(expressions.next());
    }
    Iterator<LogicalPlan> subqueries = node.subqueries().iterator();
    while (subqueries.hasNext()) {
      walk(subqueries.next());
    }
    if (node.children().isEmpty()) {
      if (!SAFE_LEAVES.contains(node.getClass().getSimpleName()) && !readsBiFolders(node)) {
        throw refused("BI reads the views of the `" + SCHEMA + "` schema only (SHOW TABLES IN "
            + SCHEMA + "); tables and files outside it are not served (" + node.nodeName() + " "
            + folders(node) + ")");
      }
      return;
    }
    Iterator<LogicalPlan> children = node.children().iterator();
    while (children.hasNext()) {
      walk(children.next());
    }
  }

  private static void refuseExpressions(Expression expression) {
    if (REFUSED_EXPRESSIONS.contains(expression.getClass().getSimpleName())) {
      throw refused("reflect/java_method are not allowed on the BI server");
    }
    Iterator<Expression> children = expression.children().iterator();
    while (children.hasNext()) {
      refuseExpressions(children.next());
    }
  }

  private static boolean readsBiFolders(LogicalPlan leaf) {
    if (!(leaf instanceof LogicalRelation relation)
        || !(relation.relation() instanceof HadoopFsRelation files)) {
      return false;
    }
    Iterator<?> roots = files.location().rootPaths().iterator();
    boolean any = false;
    while (roots.hasNext()) {
      if (!insideReadable(normal(roots.next().toString()))) {
        return false;
      }
      any = true;
    }
    return any;
  }

  /** A BI folder or a file in it (Delta reads its own log, {@code _delta_log/...}, as a query). */
  private static boolean insideReadable(String path) {
    for (String folder : readable) {
      if (path.equals(folder) || path.startsWith(folder + "/")) {
        return !path.contains("/../");
      }
    }
    return false;
  }

  private static String folders(LogicalPlan leaf) {
    if (leaf instanceof LogicalRelation relation && relation.relation() instanceof HadoopFsRelation files) {
      return files.location().rootPaths().mkString(", ");
    }
    return "";
  }

  /** {@code file:/a/b/}, {@code file:///a/b} and {@code /a/b} name the same folder. */
  static String normal(String path) {
    String plain = path.trim().replaceFirst("^file:/+", "/");
    return plain.length() > 1 && plain.endsWith("/") ? plain.substring(0, plain.length() - 1) : plain;
  }

  private static boolean changesASetting(LogicalPlan plan) {
    // SET key=value holds Some((key, Some(value))); SET and SET key only read.
    if (!(plan instanceof SetCommand set)) {
      return false;
    }
    Option<Tuple2<String, Option<String>>> pair = set.kv();
    return pair.isDefined() && pair.get()._2().isDefined();
  }

  private static String describe(String commandClass) {
    return commandClass.replaceAll("(Command|Exec)$", "").replaceAll("([a-z])([A-Z])", "$1 $2").toUpperCase();
  }

  private static SecurityException refused(String message) {
    return new SecurityException(message);
  }
}
