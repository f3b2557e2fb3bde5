package profiling.sqlserver;

import org.apache.spark.sql.AnalysisException;
import scala.collection.immutable.Map;

/**
 * The error a SQL client sees for a statement the read-only server refuses.
 *
 * <p>Spark's messages come from its own registry of error conditions; this one borrows the generic
 * "Operation not allowed: ..." condition.
 */
final class ReadOnlyViolation extends AnalysisException {
    private static final long serialVersionUID = 1L;

    private ReadOnlyViolation(String what) {
        super("_LEGACY_ERROR_TEMP_0035", new Map.Map1<>("message", "the profiling SQL server is read-only: " + what
                + ". It runs SELECT queries over the catalog's tables and views, SHOW, DESCRIBE, EXPLAIN, USE"
                + " and SET without a value"));
    }

    /**
     * Throws the violation from code that Scala calls. AnalysisException is a checked exception to
     * Java only: Scala's callers (the analyzer, the parser's users) expect and report it as it is.
     */
    static RuntimeException refuse(String what) {
        throw ReadOnlyViolation.<RuntimeException>unchecked(new ReadOnlyViolation(what));
    }

    @SuppressWarnings("unchecked")
    private static <E extends Throwable> E unchecked(Throwable exception) throws E {
        throw (E) exception;
    }
}
