package profiling.sqlserver;

import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.TableIdentifier;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.parser.ParameterContext;
import org.apache.spark.sql.catalyst.parser.ParseException;
import org.apache.spark.sql.catalyst.parser.ParserInterface;
import org.apache.spark.sql.catalyst.plans.logical.CompoundPlanStatement;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.StructType;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;

/**
 * Spark's SQL parser, refusing before analysis what must not reach it.
 *
 * <p>Settings: a JDBC URL can carry settings ({@code jdbc:hive2://host:port/db;?key=value}) that the
 * Thrift server copies into the new session without running SET. Some of them act during analysis,
 * before any check rule runs: {@code spark.sql.runSQLOnFiles} lists and samples files, a
 * {@code spark.sql.catalog.*} plugin connects where it is told, {@code spark.sql.analyzer.*} picks
 * the analyzer that runs the rules, and keys outside {@code spark.*} reach the Hadoop configuration
 * (file systems). Those are pinned to the server's values; the parser is the first thing every
 * statement passes through. Other settings are left alone: Delta changes some {@code spark.*} ones
 * itself, and {@code hive.*} ones are HiveServer2's (its client and the server each send a few with
 * every session).
 *
 * <p>SQL scripts (BEGIN ... END): each statement in them would pass the check rule, but a read-only
 * server has no use for variables and loops, and Spark's script runner fails on the rule's refusals.
 */
final class ReadOnlyParser implements ParserInterface {
    private final SparkSession session;
    private final ParserInterface delegate;

    ReadOnlyParser(SparkSession session, ParserInterface delegate) {
        this.session = session;
        this.delegate = delegate;
    }

    /** The pinned settings a new session of this server starts with, before any client touched them. */
    private Map<String, String> serverSettings;

    private static boolean isPinned(String key) {
        return key.equals("spark.sql.runSQLOnFiles") || key.startsWith("spark.sql.catalog.")
                || key.startsWith("spark.sql.analyzer.") || !(key.startsWith("spark.") || key.startsWith("hive."));
    }

    private static Map<String, String> pinnedSettings(SparkSession of) {
        Map<String, String> pinned = new TreeMap<>(CollectionConverters.asJava(of.sessionState().conf().getAllConfs()));
        pinned.keySet().removeIf(key -> !isPinned(key));
        return pinned;
    }

    private void requireServerSettings() {
        if (serverSettings == null) {
            serverSettings = pinnedSettings(session.newSession());
        }
        Map<String, String> settings = pinnedSettings(session);
        if (!settings.equals(serverSettings)) {
            Set<String> changed = new TreeSet<>(settings.keySet());
            changed.addAll(serverSettings.keySet());
            changed.removeIf(key -> Objects.equals(settings.get(key), serverSettings.get(key)));
            throw ReadOnlyViolation.refuse("this session changed settings that the server pins ("
                    + String.join(", ", changed) + "), for example in the JDBC URL; connect without them");
        }
    }

    private static LogicalPlan refuseScripts(LogicalPlan plan) {
        if (plan instanceof CompoundPlanStatement) {
            throw ReadOnlyViolation.refuse("SQL scripts (BEGIN ... END) are refused");
        }
        return plan;
    }

    @Override
    public LogicalPlan parsePlan(String sqlText) throws ParseException {
        requireServerSettings();
        return refuseScripts(delegate.parsePlan(sqlText));
    }

    @Override
    public LogicalPlan parsePlanWithParameters(String sqlText, ParameterContext parameters) throws ParseException {
        requireServerSettings();
        return refuseScripts(delegate.parsePlanWithParameters(sqlText, parameters));
    }

    @Override
    public LogicalPlan parseQuery(String sqlText) throws ParseException {
        requireServerSettings();
        return delegate.parseQuery(sqlText);
    }

    @Override
    public Expression parseExpression(String sqlText) throws ParseException {
        return delegate.parseExpression(sqlText);
    }

    @Override
    public TableIdentifier parseTableIdentifier(String sqlText) throws ParseException {
        return delegate.parseTableIdentifier(sqlText);
    }

    @Override
    public FunctionIdentifier parseFunctionIdentifier(String sqlText) throws ParseException {
        return delegate.parseFunctionIdentifier(sqlText);
    }

    @Override
    public Seq<String> parseMultipartIdentifier(String sqlText) throws ParseException {
        return delegate.parseMultipartIdentifier(sqlText);
    }

    @Override
    public StructType parseRoutineParam(String sqlText) throws ParseException {
        return delegate.parseRoutineParam(sqlText);
    }

    @Override
    public StructType parseTableSchema(String sqlText) throws ParseException {
        return delegate.parseTableSchema(sqlText);
    }

    @Override
    public DataType parseDataType(String sqlText) throws ParseException {
        return delegate.parseDataType(sqlText);
    }
}
