package org.apache.hive.service.auth;

import javax.security.sasl.AuthenticationException;

/** Compile-time copy of HiveServer2's interface (Spark ships the real one); not packaged. */
public interface PasswdAuthenticationProvider {
  void Authenticate(String user, String password) throws AuthenticationException;
}
