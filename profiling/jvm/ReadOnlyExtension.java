package profiling.sqlserver;

import org.apache.spark.sql.SparkSessionExtensions;
import scala.Function1;
import scala.runtime.BoxedUnit;

/**
 * Makes every session of the SQL server read-only (named in {@code spark.sql.extensions}).
 *
 * <p>{@link ReadOnlyParser} refuses, before analysis, statements from a session whose pinned settings
 * a JDBC URL changed, and SQL scripts; {@link FilePathRefusal} words the refusal of file paths during
 * analysis; {@link ReadOnlyGuard} then checks each analyzed plan before Spark executes it.
 */
public final class ReadOnlyExtension implements Function1<SparkSessionExtensions, BoxedUnit> {
    @Override
    public BoxedUnit apply(SparkSessionExtensions extensions) {
        extensions.injectParser(ReadOnlyParser::new);
        extensions.injectResolutionRule(session -> new FilePathRefusal());
        extensions.injectCheckRule(ReadOnlyGuard::new);
        return BoxedUnit.UNIT;
    }
}
