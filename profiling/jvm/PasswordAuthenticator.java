package profiling.sqlserver;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.util.HashMap;
import java.util.Map;

import javax.security.sasl.AuthenticationException;

import org.apache.hive.service.auth.PasswdAuthenticationProvider;

/**
 * Checks a JDBC client's user name and password (HiveServer2's CUSTOM authentication).
 *
 * <p>The secret never appears on a command line, where {@code ps} would show it: the server's
 * environment holds either {@code PROFILING_SQL_USER} and {@code PROFILING_SQL_PASSWORD}, or
 * {@code PROFILING_SQL_PASSWORD_FILE}, the path of a file of {@code user:password} lines, read
 * at each login so that a changed file needs no restart. With neither, nobody gets in. Passwords
 * are compared as SHA-256 digests in constant time, an unknown user against a random digest.
 */
public final class PasswordAuthenticator implements PasswdAuthenticationProvider {
    private static final byte[] UNKNOWN_USER_DIGEST = new SecureRandom().generateSeed(32);

    @Override
    public void Authenticate(String user, String password) throws AuthenticationException {
        Map<String, byte[]> digests;
        try {
            digests = passwordDigests();
        } catch (IOException e) {
            throw new AuthenticationException("the server cannot read its password file", e);
        }
        byte[] expected = digests.get(user == null ? "" : user);
        boolean matches = MessageDigest.isEqual(expected == null ? UNKNOWN_USER_DIGEST : expected,
                                                sha256(password == null ? "" : password));
        if (expected == null || !matches) {
            throw new AuthenticationException("wrong user name or password");
        }
    }

    private static Map<String, byte[]> passwordDigests() throws IOException {
        Map<String, byte[]> digests = new HashMap<>();
        String file = System.getenv("PROFILING_SQL_PASSWORD_FILE");
        if (file != null && !file.isEmpty()) {
            for (String line : Files.readAllLines(Path.of(file), StandardCharsets.UTF_8)) {
                int colon = line.indexOf(':');
                if (colon > 0 && colon < line.length() - 1 && !line.startsWith("#")) {
                    digests.put(line.substring(0, colon), sha256(line.substring(colon + 1)));
                }
            }
            return digests;
        }
        String password = System.getenv("PROFILING_SQL_PASSWORD");
        String user = System.getenv("PROFILING_SQL_USER");
        if (password != null && !password.isEmpty() && user != null && !user.isEmpty()) {
            digests.put(user, sha256(password));
        }
        return digests;
    }

    private static byte[] sha256(String text) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(text.getBytes(StandardCharsets.UTF_8));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every Java runtime has SHA-256", e);
        }
    }
}
