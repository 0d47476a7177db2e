package vqa.esnode;

import java.lang.reflect.Method;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

/**
 * Starts one Elasticsearch node from the jars on the classpath and keeps it up until the JVM is
 * asked to stop (SIGTERM/SIGINT), then closes it cleanly so the data directory stays usable.
 *
 * <p>Arguments are Elasticsearch settings as {@code key=value}; launcher.py chooses them. The node is
 * built the way the server's own bootstrap builds it ({@code new Node(Environment, PluginsLoader)}),
 * with the modules (here only transport-netty4, the HTTP layer) found under {@code path.home/modules}.
 * Everything goes through reflection, so this file compiles with any JDK >= 17 while the
 * Elasticsearch 9 jars need a Java 21+ runtime; the same file starts an 8.x node too.
 */
public final class LocalNode {
    public static final String READY_MARKER = "LOCAL_NODE_STARTED";

    private LocalNode() {}

    public static void main(String[] args) throws Exception {
        Class<?> settingsClass = Class.forName("org.elasticsearch.common.settings.Settings");
        Object builder = settingsClass.getMethod("builder").invoke(null);
        Method put = builder.getClass().getMethod("put", String.class, String.class);
        for (String arg : args) {
            int eq = arg.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("expected key=value, got: " + arg);
            }
            put.invoke(builder, arg.substring(0, eq), arg.substring(eq + 1));
        }
        Object settings = builder.getClass().getMethod("build").invoke(builder);

        Class<?> logConfigurator = Class.forName("org.elasticsearch.common.logging.LogConfigurator");
        logConfigurator.getMethod("configureWithoutConfig", settingsClass).invoke(null, settings);

        Supplier<String> nodeName = () -> "local";
        Object environment = Class.forName("org.elasticsearch.node.InternalSettingsPreparer")
            .getMethod("prepareEnvironment", settingsClass, Map.class, Path.class, Supplier.class)
            .invoke(null, settings, Map.of(), null, nodeName);
        Class<?> environmentClass = environment.getClass();
        Path modulesDir = (Path) environmentClass.getMethod("modulesDir").invoke(environment);
        Path pluginsDir = (Path) environmentClass.getMethod("pluginsDir").invoke(environment);

        Class<?> loaderClass = Class.forName("org.elasticsearch.plugins.PluginsLoader");
        Object modules = loaderClass.getMethod("loadModulesBundles", Path.class, boolean.class).invoke(null, modulesDir, false);
        Object plugins = loaderClass.getMethod("loadPluginsBundles", Path.class, boolean.class).invoke(null, pluginsDir, false);
        Object pluginsLoader = loaderClass.getMethod("createPluginsLoader", Set.class, Set.class, Map.class, boolean.class)
            .invoke(null, modules, plugins, Map.of(), false);

        Object node = Class.forName("org.elasticsearch.node.Node")
            .getConstructor(environmentClass, loaderClass)
            .newInstance(environment, pluginsLoader);

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.getClass().getMethod("close").invoke(node);
                node.getClass().getMethod("awaitClose", long.class, TimeUnit.class).invoke(node, 20L, TimeUnit.SECONDS);
            } catch (ReflectiveOperationException e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "local-node-shutdown"));

        node.getClass().getMethod("start").invoke(node);
        System.out.println(READY_MARKER);
        System.out.flush();
        stopped.await();
    }
}
