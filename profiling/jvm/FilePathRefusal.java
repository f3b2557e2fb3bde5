package profiling.sqlserver;

import org.apache.spark.sql.catalyst.analysis.UnresolvedRelation;
import org.apache.spark.sql.catalyst.analysis.UnresolvedTable;
import org.apache.spark.sql.catalyst.analysis.UnresolvedTableOrView;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.rules.Rule;
import scala.collection.immutable.Seq;
import scala.runtime.BoxedUnit;

/**
 * Refuses a table named by a file path ({@code text.`/etc/os-release`}, {@code delta.`/data/t`}) with
 * the server's own message, where Spark would answer "table or view not found".
 *
 * <p>A resolution rule, so that it sees names that IDENTIFIER(...) builds too. The catalog allows no
 * '/' in names, so a name that holds one is a path. This rule only words the refusal: with
 * {@code spark.sql.runSQLOnFiles} off Spark cannot read the path, and ReadOnlyGuard refuses the read
 * should it be on.
 */
final class FilePathRefusal extends Rule<LogicalPlan> {
    @Override
    public LogicalPlan apply(LogicalPlan plan) {
        plan.foreach(node -> {
            Seq<String> name = null;
            if (node instanceof UnresolvedRelation) {
                name = ((UnresolvedRelation) node).multipartIdentifier();
            } else if (node instanceof UnresolvedTableOrView) {
                name = ((UnresolvedTableOrView) node).multipartIdentifier();
            } else if (node instanceof UnresolvedTable) {
                name = ((UnresolvedTable) node).multipartIdentifier();
            }
            if (name != null && name.size() > 1 && name.last().contains("/")) {
                throw ReadOnlyViolation.refuse("reading files by path (" + name.mkString(".") + ") is refused:"
                        + " only the catalog's tables and views can be read");
            }
            return BoxedUnit.UNIT;
        });
        return plan;
    }
}
