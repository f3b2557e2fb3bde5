package profiling.sqlserver;

import java.util.Set;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.TableIdentifier;
import org.apache.spark.sql.catalyst.analysis.ResolvedNamespace;
import org.apache.spark.sql.catalyst.analysis.ResolvedNonPersistentFunc;
import org.apache.spark.sql.catalyst.analysis.ResolvedPersistentFunc;
import org.apache.spark.sql.catalyst.analysis.ResolvedPersistentView;
import org.apache.spark.sql.catalyst.analysis.ResolvedTable;
import org.apache.spark.sql.catalyst.analysis.ResolvedTempView;
import org.apache.spark.sql.catalyst.catalog.HiveTableRelation;
import org.apache.spark.sql.catalyst.expressions.CallMethodViaReflection;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.FromAvro;
import org.apache.spark.sql.catalyst.expressions.FromProtobuf;
import org.apache.spark.sql.catalyst.expressions.SchemaOfAvro;
import org.apache.spark.sql.catalyst.expressions.SubqueryExpression;
import org.apache.spark.sql.catalyst.expressions.ToAvro;
import org.apache.spark.sql.catalyst.expressions.ToProtobuf;
import org.apache.spark.sql.catalyst.expressions.TryReflect;
import org.apache.spark.sql.catalyst.plans.logical.Aggregate;
import org.apache.spark.sql.catalyst.plans.logical.AppendColumns;
import org.apache.spark.sql.catalyst.plans.logical.AppendColumnsWithObject;
import org.apache.spark.sql.catalyst.plans.logical.AsOfJoin;
import org.apache.spark.sql.catalyst.plans.logical.CTERelationDef;
import org.apache.spark.sql.catalyst.plans.logical.CTERelationRef;
import org.apache.spark.sql.catalyst.plans.logical.CoGroup;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.CommandResult;
import org.apache.spark.sql.catalyst.plans.logical.DescribeColumn;
import org.apache.spark.sql.catalyst.plans.logical.DescribeFunction;
import org.apache.spark.sql.catalyst.plans.logical.DescribeNamespace;
import org.apache.spark.sql.catalyst.plans.logical.DescribeRelation;
import org.apache.spark.sql.catalyst.plans.logical.DeserializeToObject;
import org.apache.spark.sql.catalyst.plans.logical.Distinct;
import org.apache.spark.sql.catalyst.plans.logical.Except;
import org.apache.spark.sql.catalyst.plans.logical.Expand;
import org.apache.spark.sql.catalyst.plans.logical.Filter;
import org.apache.spark.sql.catalyst.plans.logical.Generate;
import org.apache.spark.sql.catalyst.plans.logical.GlobalLimit;
import org.apache.spark.sql.catalyst.plans.logical.Intersect;
import org.apache.spark.sql.catalyst.plans.logical.Join;
import org.apache.spark.sql.catalyst.plans.logical.LateralJoin;
import org.apache.spark.sql.catalyst.plans.logical.LocalLimit;
import org.apache.spark.sql.catalyst.plans.logical.LocalRelation;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.MapElements;
import org.apache.spark.sql.catalyst.plans.logical.MapGroups;
import org.apache.spark.sql.catalyst.plans.logical.MapPartitions;
import org.apache.spark.sql.catalyst.plans.logical.Offset;
import org.apache.spark.sql.catalyst.plans.logical.OneRowRelation;
import org.apache.spark.sql.catalyst.plans.logical.Project;
import org.apache.spark.sql.catalyst.plans.logical.Range;
import org.apache.spark.sql.catalyst.plans.logical.RebalancePartitions;
import org.apache.spark.sql.catalyst.plans.logical.Repartition;
import org.apache.spark.sql.catalyst.plans.logical.RepartitionByExpression;
import org.apache.spark.sql.catalyst.plans.logical.ResolvedHint;
import org.apache.spark.sql.catalyst.plans.logical.Sample;
import org.apache.spark.sql.catalyst.plans.logical.SerializeFromObject;
import org.apache.spark.sql.catalyst.plans.logical.SetCatalogAndNamespace;
import org.apache.spark.sql.catalyst.plans.logical.ShowColumns;
import org.apache.spark.sql.catalyst.plans.logical.ShowCreateTable;
import org.apache.spark.sql.catalyst.plans.logical.ShowFunctions;
import org.apache.spark.sql.catalyst.plans.logical.ShowPartitions;
import org.apache.spark.sql.catalyst.plans.logical.ShowTableProperties;
import org.apache.spark.sql.catalyst.plans.logical.ShowTables;
import org.apache.spark.sql.catalyst.plans.logical.ShowTablesExtended;
import org.apache.spark.sql.catalyst.plans.logical.ShowViews;
import org.apache.spark.sql.catalyst.plans.logical.Sort;
import org.apache.spark.sql.catalyst.plans.logical.SubqueryAlias;
import org.apache.spark.sql.catalyst.plans.logical.Tail;
import org.apache.spark.sql.catalyst.plans.logical.TypedFilter;
import org.apache.spark.sql.catalyst.plans.logical.Union;
import org.apache.spark.sql.catalyst.plans.logical.UnionLoop;
import org.apache.spark.sql.catalyst.plans.logical.UnionLoopRef;
import org.apache.spark.sql.catalyst.plans.logical.View;
import org.apache.spark.sql.catalyst.plans.logical.Window;
import org.apache.spark.sql.catalyst.plans.logical.WithCTE;
import org.apache.spark.sql.connector.catalog.CatalogManager;
import org.apache.spark.sql.connector.catalog.Identifier;
import org.apache.spark.sql.execution.ExternalRDD;
import org.apache.spark.sql.execution.LogicalRDD;
import org.apache.spark.sql.execution.command.DescribeColumnCommand;
import org.apache.spark.sql.execution.command.DescribeDatabaseCommand;
import org.apache.spark.sql.execution.command.DescribeFunctionCommand;
import org.apache.spark.sql.execution.command.DescribeQueryCommand;
import org.apache.spark.sql.execution.command.DescribeRelationJsonCommand;
import org.apache.spark.sql.execution.command.DescribeTableCommand;
import org.apache.spark.sql.execution.command.ExplainCommand;
import org.apache.spark.sql.execution.command.SetCatalogCommand;
import org.apache.spark.sql.execution.command.SetCommand;
import org.apache.spark.sql.execution.command.SetNamespaceCommand;
import org.apache.spark.sql.execution.command.ShowCatalogsCommand;
import org.apache.spark.sql.execution.command.ShowColumnsCommand;
import org.apache.spark.sql.execution.command.ShowCreateTableAsSerdeCommand;
import org.apache.spark.sql.execution.command.ShowCreateTableCommand;
import org.apache.spark.sql.execution.command.ShowCurrentNamespaceCommand;
import org.apache.spark.sql.execution.command.ShowFunctionsCommand;
import org.apache.spark.sql.execution.command.ShowNamespacesCommand;
import org.apache.spark.sql.execution.command.ShowPartitionsCommand;
import org.apache.spark.sql.execution.command.ShowTablePropertiesCommand;
import org.apache.spark.sql.execution.command.ShowTablesCommand;
import org.apache.spark.sql.execution.command.ShowViewsCommand;
import org.apache.spark.sql.execution.datasources.HadoopFsRelation;
import org.apache.spark.sql.execution.datasources.LogicalRelation;
import org.apache.spark.sql.execution.datasources.v2.DataSourceV2Relation;
import scala.Function1;
import scala.Option;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.BoxedUnit;

/**
 * The check rule that keeps the SQL server read-only.
 *
 * <p>Spark runs check rules on every analyzed plan, before it executes a command (commands run
 * eagerly, right after analysis). Everything here is an allow-list, so that what Spark or Delta
 * adds later is refused until someone looks at it: commands that only read, query operators, and
 * as data only the tables and views of the catalog (no file paths). Expressions are the exception,
 * too many to list: those that call into the JVM are refused by name.
 */
final class ReadOnlyGuard implements Function1<LogicalPlan, BoxedUnit> {
    private static final Set<Class<?>> READING_COMMANDS = Set.of(
            ShowTables.class, ShowTablesCommand.class, ShowTablesExtended.class, ShowNamespacesCommand.class,
            ShowColumns.class, ShowColumnsCommand.class, ShowCreateTable.class, ShowCreateTableCommand.class,
            ShowCreateTableAsSerdeCommand.class, ShowTableProperties.class, ShowTablePropertiesCommand.class,
            ShowPartitions.class, ShowPartitionsCommand.class, ShowViews.class, ShowViewsCommand.class,
            ShowFunctions.class, ShowFunctionsCommand.class, ShowCatalogsCommand.class,
            ShowCurrentNamespaceCommand.class, DescribeRelation.class, DescribeTableCommand.class,
            DescribeRelationJsonCommand.class, DescribeColumn.class, DescribeColumnCommand.class,
            DescribeNamespace.class, DescribeDatabaseCommand.class, DescribeFunction.class,
            DescribeFunctionCommand.class, DescribeQueryCommand.class, ExplainCommand.class,
            SetCatalogAndNamespace.class, SetNamespaceCommand.class, SetCatalogCommand.class);

    /** Delta's DESCRIBE DETAIL, DESCRIBE HISTORY and SHOW COLUMNS (its jar is not on the compile class path). */
    private static final Set<String> DELTA_READING_COMMANDS = Set.of(
            "org.apache.spark.sql.delta.commands.DescribeDeltaDetailCommand",
            "org.apache.spark.sql.delta.commands.DescribeDeltaHistory",
            "org.apache.spark.sql.delta.commands.ShowDeltaTableColumnsCommand");

    /** DESCRIBE HISTORY once Delta resolved it: a leaf holding the table, which may be a path. */
    private static final String DELTA_HISTORY_COMMAND =
            "org.apache.spark.sql.delta.commands.DescribeDeltaHistoryCommand";

    private static final String DELTA_LOG_INDEX = "org.apache.spark.sql.delta.DeltaLogFileIndex";

    private static final Set<Class<?>> QUERY_OPERATORS = Set.of(
            Project.class, Filter.class, Aggregate.class, Join.class, LateralJoin.class, AsOfJoin.class,
            Sort.class, GlobalLimit.class, LocalLimit.class, Offset.class, Tail.class, Union.class,
            Intersect.class, Except.class, Distinct.class, Window.class, Generate.class, Expand.class,
            Sample.class, SubqueryAlias.class, View.class, WithCTE.class, CTERelationDef.class,
            UnionLoop.class, Repartition.class, RepartitionByExpression.class, RebalancePartitions.class,
            ResolvedHint.class,
            // Typed Dataset operators: SQL cannot build them, Delta's own queries on its log do.
            DeserializeToObject.class, SerializeFromObject.class, MapPartitions.class, MapElements.class,
            TypedFilter.class, AppendColumns.class, AppendColumnsWithObject.class, MapGroups.class, CoGroup.class);

    /**
     * Leaves that hold no data of their own, or that a reading command names; CommandResult holds
     * the rows of a command that passed this rule, RDDs come from the Dataset API (Delta), not SQL.
     */
    private static final Set<Class<?>> HARMLESS_LEAVES = Set.of(
            LocalRelation.class, OneRowRelation.class, Range.class, CTERelationRef.class, UnionLoopRef.class,
            CommandResult.class, LogicalRDD.class, ExternalRDD.class,
            ResolvedNamespace.class, ResolvedPersistentView.class, ResolvedTempView.class,
            ResolvedNonPersistentFunc.class, ResolvedPersistentFunc.class);

    private static final Set<Class<?>> JVM_CALLS = Set.of(
            CallMethodViaReflection.class, TryReflect.class, FromProtobuf.class, ToProtobuf.class,
            FromAvro.class, ToAvro.class, SchemaOfAvro.class);

    private final SparkSession session;

    ReadOnlyGuard(SparkSession session) {
        this.session = session;
    }

    @Override
    public BoxedUnit apply(LogicalPlan plan) {
        if (plan instanceof Command) {
            requireReadingCommand(plan);
            CollectionConverters.asJava(plan.children()).forEach(this::checkReads);
        } else {
            checkReads(plan);
        }
        return BoxedUnit.UNIT;
    }

    private static void requireReadingCommand(LogicalPlan command) {
        if (DELTA_HISTORY_COMMAND.equals(command.getClass().getName())) {
            if (!namesCatalogDeltaTable(command)) {
                throw ReadOnlyViolation.refuse(
                        "DESCRIBE HISTORY of a path is refused: only the catalog's tables can be described");
            }
        } else if (command instanceof SetCommand) {
            Option<scala.Tuple2<String, Option<String>>> keyValue = ((SetCommand) command).kv();
            if (keyValue.isDefined() && keyValue.get()._2().isDefined()) {
                throw ReadOnlyViolation.refuse("changing a setting (SET " + keyValue.get()._1() + "=...) is refused");
            }
        } else if (!READING_COMMANDS.contains(command.getClass())
                && !DELTA_READING_COMMANDS.contains(command.getClass().getName())) {
            throw ReadOnlyViolation.refuse(command.nodeName() + " is refused");
        }
    }

    /** A query, or what a reading command names. */
    private void checkReads(LogicalPlan plan) {
        if (plan instanceof Command) {
            throw ReadOnlyViolation.refuse(plan.nodeName() + " is refused");
        }
        if (plan.children().isEmpty()) {
            requireCatalogData(plan);
        } else if (!QUERY_OPERATORS.contains(plan.getClass())) {
            throw ReadOnlyViolation.refuse("the operator " + plan.nodeName() + " is refused");
        }
        CollectionConverters.asJava(plan.expressions()).forEach(this::checkExpression);
        CollectionConverters.asJava(plan.children()).forEach(this::checkReads);
    }

    private void requireCatalogData(LogicalPlan leaf) {
        boolean fromCatalog;
        if (leaf instanceof LogicalRelation) {
            LogicalRelation relation = (LogicalRelation) leaf;
            fromCatalog = relation.catalogTable().isDefined() || isDeltaLog(relation);
        } else if (leaf instanceof DataSourceV2Relation) {
            DataSourceV2Relation relation = (DataSourceV2Relation) leaf;
            fromCatalog = relation.catalog().isDefined() && relation.identifier().isDefined()
                    && isCatalogTable(relation.catalog().get().name(), relation.identifier().get());
        } else if (leaf instanceof ResolvedTable) {
            ResolvedTable table = (ResolvedTable) leaf;
            fromCatalog = isCatalogTable(table.catalog().name(), table.identifier());
        } else {
            fromCatalog = leaf instanceof HiveTableRelation || HARMLESS_LEAVES.contains(leaf.getClass());
        }
        if (!fromCatalog) {
            throw ReadOnlyViolation.refuse("only the catalog's tables and views can be read, not files by path"
                    + " or other sources (" + leaf.nodeName() + ")");
        }
    }

    /** Whether Delta's command holds a catalog table (its DeltaTableV2 has a catalogTable), asked by reflection. */
    private static boolean namesCatalogDeltaTable(LogicalPlan deltaCommand) {
        try {
            Object table = deltaCommand.getClass().getMethod("table").invoke(deltaCommand);
            return ((Option<?>) table.getClass().getMethod("catalogTable").invoke(table)).isDefined();
        } catch (ReflectiveOperationException | ClassCastException e) {
            return false;
        }
    }

    /**
     * Delta reads a table's transaction log with queries of its own, through this session and so
     * through this rule. Only Delta builds a relation over a DeltaLogFileIndex: SQL cannot name one.
     */
    private static boolean isDeltaLog(LogicalRelation relation) {
        return relation.relation() instanceof HadoopFsRelation
                && DELTA_LOG_INDEX.equals(((HadoopFsRelation) relation.relation()).location().getClass().getName());
    }

    /** True for a table of the metastore; false for a path such as delta.`/some/folder`. */
    private boolean isCatalogTable(String catalog, Identifier identifier) {
        String[] namespace = identifier.namespace();
        if (!CatalogManager.SESSION_CATALOG_NAME().equals(catalog) || namespace.length != 1) {
            return false;
        }
        try {
            return session.sessionState().catalog().tableExists(
                    new TableIdentifier(identifier.name(), Option.apply(namespace[0])));
        } catch (RuntimeException e) {
            return false;
        }
    }

    private void checkExpression(Expression expression) {
        if (JVM_CALLS.contains(expression.getClass())) {
            throw ReadOnlyViolation.refuse("calling into the JVM (" + expression.prettyName() + ") is refused");
        }
        if (expression instanceof SubqueryExpression) {
            checkReads(((SubqueryExpression) expression).plan());
        }
        CollectionConverters.asJava(expression.children()).forEach(this::checkExpression);
    }
}
