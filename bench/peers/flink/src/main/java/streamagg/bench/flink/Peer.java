package streamagg.bench.flink;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.serialization.SerializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.CoreOptions;
import org.apache.flink.configuration.JobManagerOptions;
import org.apache.flink.configuration.RestOptions;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.configuration.StateBackendOptions;
import org.apache.flink.configuration.TaskManagerOptions;
import org.apache.flink.configuration.WebOptions;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.sink.KafkaSinkBuilder;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.state.rocksdb.RocksDBOptions;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.OffsetResetStrategy;

/**
 * streamagg's job in Apache Flink (DataStream API): JSON TrafficEvents keyed by source, event time
 * from the `timestamp` field with a bounded-out-of-orderness watermark of 10 s (the grace),
 * tumbling 60 s event-time windows, count/sum/avg/min/max, final results only (no allowed lateness:
 * each window fires once, when the watermark passes its end), TrafficAverage JSON to the output
 * topic. RocksDB state backend, checkpoints every 1 s, one task slot, a local MiniCluster in this
 * JVM.
 *
 * <p>A window [s, s + 60 s) fires once the watermark, max event time − 10 s − 1 ms, reaches its
 * last millisecond: once an event at s + 70 s or later has been read, exactly when Kafka Streams'
 * and streamagg's grace closes it. KafkaSource keeps one watermark per partition and forwards
 * their minimum, so a window closes only once every partition has moved past it; the preload ends
 * each partition with a seal event 15 minutes ahead, so every window closes without idleness
 * detection (which could let a lagging partition's events arrive after their window fired).
 *
 * <p>Usage: Peer BROKERS INPUT OUTPUT GROUP STATE_DIR at-least-once|exactly-once
 */
public final class Peer {
  private static final ObjectMapper JSON = new ObjectMapper();

  /** One TrafficEvent (a Flink POJO: public fields, no-argument constructor). */
  public static final class Event {
    public String source;
    public long timestamp;
    public double value;

    public Event() {}
  }

  /** count, sum, min, max of one window and source (RocksDB-held aggregate state). */
  public static final class Stats {
    public long count;
    public double sum;
    public double min = Double.POSITIVE_INFINITY;
    public double max = Double.NEGATIVE_INFINITY;

    public Stats() {}
  }

  /**
   * Decodes a record's JSON value; the source is the record key (the input is keyed by source),
   * as for the other peers. Undecodable records are skipped.
   */
  static final class Decode implements KafkaRecordDeserializationSchema<Event> {
    private boolean first = true;

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<Event> out) {
      if (first) { // start-up is over: the benchmark times processing from here
        first = false;
        System.err.println("first_record_ms=" + System.currentTimeMillis());
        System.err.flush();
      }
      try {
        JsonNode json = JSON.readTree(record.value());
        Event event = new Event();
        event.source =
            record.key() != null ? new String(record.key(), StandardCharsets.UTF_8) : json.get("source").asText();
        event.timestamp = json.get("timestamp").asLong();
        event.value = json.get("value").asDouble();
        out.collect(event);
      } catch (Exception e) {
        // not a TrafficEvent: dropped, like the Kafka Streams peer's filter
      }
    }

    @Override
    public TypeInformation<Event> getProducedType() {
      return TypeInformation.of(Event.class);
    }
  }

  /** The incremental aggregate: one Stats per window and source, updated per event. */
  static final class Aggregate implements AggregateFunction<Event, Stats, Stats> {
    @Override
    public Stats createAccumulator() {
      return new Stats();
    }

    @Override
    public Stats add(Event event, Stats stats) {
      stats.count += 1;
      stats.sum += event.value;
      stats.min = Math.min(stats.min, event.value);
      stats.max = Math.max(stats.max, event.value);
      return stats;
    }

    @Override
    public Stats getResult(Stats stats) {
      return stats;
    }

    @Override
    public Stats merge(Stats a, Stats b) {
      Stats m = new Stats();
      m.count = a.count + b.count;
      m.sum = a.sum + b.sum;
      m.min = Math.min(a.min, b.min);
      m.max = Math.max(a.max, b.max);
      return m;
    }
  }

  /** A closed window's TrafficAverage JSON, keyed by source: (key, value). */
  static final class Emit extends ProcessWindowFunction<Stats, Tuple2<String, String>, String, TimeWindow> {
    @Override
    public void process(String source, Context context, Iterable<Stats> results, Collector<Tuple2<String, String>> out)
        throws Exception {
      Stats stats = results.iterator().next();
      ObjectNode average = JSON.createObjectNode();
      average.put("source", source);
      average.put("window_start", context.window().getStart());
      average.put("window_end", context.window().getEnd());
      average.put("count", stats.count);
      average.put("sum", stats.sum);
      average.put("avg", stats.sum / stats.count);
      average.put("min", stats.min);
      average.put("max", stats.max);
      out.collect(Tuple2.of(source, JSON.writeValueAsString(average)));
    }
  }

  /** Field `field` of a (source, TrafficAverage JSON) pair as UTF-8: the output record's key or value. */
  static final class Utf8 implements SerializationSchema<Tuple2<String, String>> {
    private final int field;

    Utf8(int field) {
      this.field = field;
    }

    @Override
    public byte[] serialize(Tuple2<String, String> average) {
      return average.<String>getField(field).getBytes(StandardCharsets.UTF_8);
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 6 || !(args[5].equals("at-least-once") || args[5].equals("exactly-once"))) {
      System.err.println("usage: Peer BROKERS INPUT OUTPUT GROUP STATE_DIR at-least-once|exactly-once");
      System.exit(2);
    }
    String brokers = args[0], input = args[1], output = args[2], group = args[3];
    Path state = Path.of(args[4]).toAbsolutePath();
    boolean exactlyOnce = args[5].equals("exactly-once");

    Configuration conf = new Configuration();
    // The embedded RocksDB state backend (EmbeddedRocksDBStateBackend) with its files in the
    // state dir; incremental checkpoints to the state dir, every 1 s like the other systems'
    // commits and checkpoints.
    conf.set(StateBackendOptions.STATE_BACKEND, "rocksdb");
    conf.set(RocksDBOptions.LOCAL_DIRECTORIES, state.resolve("rocksdb").toString());
    conf.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
    conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY, state.resolve("checkpoints").toUri().toString());
    conf.set(CheckpointingOptions.INCREMENTAL_CHECKPOINTS, true);
    // The MiniCluster's scratch files (its RPC system's jar, blobs) beside the state dir, not in
    // it: the benchmark's "state on disk" is then RocksDB and the checkpoints, as for the others.
    String scratch = state + ".flink-tmp";
    conf.set(CoreOptions.TMP_DIRS, scratch);
    conf.set(WebOptions.UPLOAD_DIR, scratch);
    // Loopback only: the MiniCluster's REST endpoint and blob server on ephemeral ports.
    conf.set(RestOptions.BIND_ADDRESS, "127.0.0.1");
    conf.set(RestOptions.ADDRESS, "127.0.0.1");
    conf.set(RestOptions.BIND_PORT, "0");
    conf.set(JobManagerOptions.BIND_HOST, "127.0.0.1");
    conf.set(JobManagerOptions.ADDRESS, "127.0.0.1");
    conf.set(TaskManagerOptions.BIND_HOST, "127.0.0.1");
    conf.set(TaskManagerOptions.HOST, "127.0.0.1");
    // A failure ends the process (non-zero) instead of restarting forever, so the benchmark
    // reports it, as the Kafka Streams peer does.
    conf.set(RestartStrategyOptions.RESTART_STRATEGY, "none");
    // From a plain main(): a local environment, a MiniCluster in this JVM.
    StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
    env.setParallelism(1); // one task slot: the comparison is per core, like the others' one thread
    env.enableCheckpointing(1000, exactlyOnce ? CheckpointingMode.EXACTLY_ONCE : CheckpointingMode.AT_LEAST_ONCE);

    KafkaSource<Event> source =
        KafkaSource.<Event>builder()
            .setBootstrapServers(brokers)
            .setTopics(input)
            .setGroupId(group)
            // the group's committed offsets, else the beginning (auto.offset.reset=earliest)
            .setStartingOffsets(OffsetsInitializer.committedOffsets(OffsetResetStrategy.EARLIEST))
            .setDeserializer(new Decode())
            .build();
    WatermarkStrategy<Event> watermarks =
        WatermarkStrategy.<Event>forBoundedOutOfOrderness(Duration.ofSeconds(10))
            .withTimestampAssigner((event, recordTimestamp) -> event.timestamp);

    KafkaSinkBuilder<Tuple2<String, String>> sink =
        KafkaSink.<Tuple2<String, String>>builder()
            .setBootstrapServers(brokers)
            .setRecordSerializer(
                KafkaRecordSerializationSchema.<Tuple2<String, String>>builder()
                    .setTopic(output)
                    .setKeySerializationSchema(new Utf8(0))
                    .setValueSerializationSchema(new Utf8(1))
                    .build())
            .setProperty("linger.ms", "10"); // as the Kafka Streams peer's producer
    if (exactlyOnce) {
      sink.setDeliveryGuarantee(DeliveryGuarantee.EXACTLY_ONCE)
          .setTransactionalIdPrefix(group) // the driver's group is unique per run
          // below the broker's transaction.max.timeout.ms (15 min); Flink's default is 1 h
          .setProperty("transaction.timeout.ms", String.valueOf(Duration.ofMinutes(10).toMillis()));
    } else {
      sink.setDeliveryGuarantee(DeliveryGuarantee.AT_LEAST_ONCE);
    }

    env.fromSource(source, watermarks, "traffic-events")
        .keyBy(event -> event.source)
        .window(TumblingEventTimeWindows.of(Duration.ofSeconds(60)))
        .allowedLateness(Duration.ZERO) // final results only: a window fires once
        .aggregate(new Aggregate(), new Emit())
        .sinkTo(sink.build());
    env.execute("streamagg-bench-flink-peer");
  }
}
