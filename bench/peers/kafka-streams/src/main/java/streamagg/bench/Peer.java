package streamagg.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.TimestampExtractor;

/**
 * streamagg's job in Kafka Streams: JSON TrafficEvents keyed by source, event time from the
 * `timestamp` field, tumbling 60 s windows with 10 s grace, count/sum/min/max, final results only
 * (suppress until the window closes), TrafficAverage JSON to the output topic. RocksDB store.
 *
 * <p>Usage: Peer BROKERS INPUT OUTPUT APPLICATION_ID STATE_DIR at_least_once|exactly_once_v2
 */
public final class Peer {
  private static final ObjectMapper JSON = new ObjectMapper();

  /** count, sum, min, max of one window and source. */
  record Agg(long count, double sum, double min, double max) {
    static final Agg EMPTY = new Agg(0, 0, Double.POSITIVE_INFINITY, Double.NEGATIVE_INFINITY);

    Agg add(double value) {
      return new Agg(count + 1, sum + value, Math.min(min, value), Math.max(max, value));
    }
  }

  static final Serde<Agg> AGG =
      Serdes.serdeFrom(
          (Serializer<Agg>)
              (topic, a) ->
                  ByteBuffer.allocate(32).putLong(a.count).putDouble(a.sum).putDouble(a.min).putDouble(a.max).array(),
          (Deserializer<Agg>)
              (topic, bytes) -> {
                ByteBuffer b = ByteBuffer.wrap(bytes);
                return new Agg(b.getLong(), b.getDouble(), b.getDouble(), b.getDouble());
              });

  /** Event time from the JSON `timestamp` field; undecodable records keep the record timestamp. */
  static final class FieldTimestamp implements TimestampExtractor {
    private boolean first = true;

    @Override
    public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
      if (first) { // start-up is over: the benchmark times processing from here
        first = false;
        System.err.println("first_record_ms=" + System.currentTimeMillis());
      }
      try {
        return JSON.readTree((byte[]) record.value()).get("timestamp").asLong();
      } catch (Exception e) {
        return record.timestamp();
      }
    }
  }

  static Double value(byte[] payload) {
    try {
      JsonNode event = JSON.readTree(payload);
      return event.get("value").asDouble();
    } catch (Exception e) {
      return null;
    }
  }

  static String quoted(String text) {
    try {
      return JSON.writeValueAsString(text);
    } catch (Exception e) {
      throw new IllegalStateException(e);
    }
  }

  public static void main(String[] args) throws Exception {
    // Warnings and errors on stderr (slf4j-simple), so a failing peer says why.
    System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
    String brokers = args[0], input = args[1], output = args[2], application = args[3];
    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, application);
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
    props.put(StreamsConfig.STATE_DIR_CONFIG, args[4]);
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, args[5]);
    // Tuned like streamagg's defaults: 1 s commits, one thread (the comparison is per core).
    props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 1000);
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
    props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 64L * 1024 * 1024);
    props.put(StreamsConfig.producerPrefix("linger.ms"), 10);
    props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");

    StreamsBuilder builder = new StreamsBuilder();
    builder.stream(
            input,
            Consumed.with(Serdes.String(), Serdes.ByteArray()).withTimestampExtractor(new FieldTimestamp()))
        .mapValues(Peer::value)
        .filter((source, value) -> value != null)
        .groupByKey(Grouped.with(Serdes.String(), Serdes.Double()))
        .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofSeconds(60), Duration.ofSeconds(10)))
        .aggregate(() -> Agg.EMPTY, (source, value, agg) -> agg.add(value), Materialized.with(Serdes.String(), AGG))
        .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
        .toStream()
        .map(
            (window, agg) ->
                KeyValue.pair(
                    window.key(),
                    String.format(
                        "{\"source\":%s,\"window_start\":%d,\"window_end\":%d,\"count\":%d,\"sum\":%s,\"avg\":%s,\"min\":%s,\"max\":%s}",
                        quoted(window.key()),
                        window.window().start(),
                        window.window().end(),
                        agg.count,
                        agg.sum,
                        agg.sum / agg.count,
                        agg.min,
                        agg.max)))
        .to(output, Produced.with(Serdes.String(), Serdes.String()));

    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    // A stream thread that dies takes the client with it; the process must then exit non-zero
    // instead of idling, so the benchmark reports the failure.
    streams.setUncaughtExceptionHandler(exception -> {
      exception.printStackTrace();
      return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
    });
    streams.setStateListener((now, before) -> {
      if (now == KafkaStreams.State.ERROR) {
        System.err.println("kafka-streams peer: client in state ERROR");
        Runtime.getRuntime().halt(1);
      }
    });
    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      streams.close(Duration.ofSeconds(30));
      stopped.countDown();
    }));
    streams.start();
    stopped.await();
  }
}
