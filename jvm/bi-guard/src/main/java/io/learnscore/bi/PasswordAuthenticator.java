package io.learnscore.bi;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.util.HexFormat;
import javax.crypto.SecretKeyFactory;
import javax.crypto.spec.PBEKeySpec;
import javax.security.sasl.AuthenticationException;
import org.apache.hive.service.auth.PasswdAuthenticationProvider;

/**
 * HiveServer2 CUSTOM authentication for the BI server: one user and password.
 *
 * <p>The file named by the system property {@code learnscore.bi.credentials} holds
 * {@code user:iterations:salt-hex:pbkdf2-sha256-hex}, written by {@code learnscore bi} from
 * LEARNSCORE_BI_PASSWORD: the password itself is in no file, command line or JVM property. The
 * file is read on every login, so a new password takes effect without a restart.
 */
public final class PasswordAuthenticator implements PasswdAuthenticationProvider {
  static final String PROPERTY = "learnscore.bi.credentials";

  @Override
  public void Authenticate(String user, String password) throws AuthenticationException {
    String path = System.getProperty(PROPERTY);
    if (path == null) {
      throw new AuthenticationException("the BI server has no credentials file (" + PROPERTY + ")");
    }
    String[] parts;
    try {
      parts = Files.readString(Path.of(path), StandardCharsets.UTF_8).trim().split(":");
    } catch (IOException e) {
      throw new AuthenticationException("the BI server cannot read its credentials file");
    }
    if (parts.length != 4 || user == null || password == null || password.isEmpty()) {
      throw new AuthenticationException("wrong user or password");
    }
    byte[] expected = HexFormat.of().parseHex(parts[3]);
    byte[] given;
    try {
      PBEKeySpec spec = new PBEKeySpec(password.toCharArray(), HexFormat.of().parseHex(parts[2]),
          Integer.parseInt(parts[1]), expected.length * 8);
      given = SecretKeyFactory.getInstance("PBKDF2WithHmacSHA256").generateSecret(spec).getEncoded();
    } catch (GeneralSecurityException | NumberFormatException e) {
      throw new AuthenticationException("the BI server's credentials file is malformed");
    }
    // Both compared in constant time, and both always: the answer says nothing about which failed.
    boolean sameUser = MessageDigest.isEqual(parts[0].getBytes(StandardCharsets.UTF_8),
        user.getBytes(StandardCharsets.UTF_8));
    boolean samePassword = MessageDigest.isEqual(expected, given);
    if (!(sameUser & samePassword)) {
      throw new AuthenticationException("wrong user or password");
    }
  }
}
