#pragma once

// The Kafka gateway: a publisher the relay writes through (an idempotent
// producer) and consumer-group subscriptions that hand records to consumer
// actors with at-least-once delivery. librdkafka stays behind this header.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/fwd.hpp>

#include <troupe/outbox/outbound_event.hpp>
#include <troupe/runtime/config.hpp>

namespace troupe {

/// The Kafka header that carries an event's id; a record without it gets
/// "topic/partition/offset" as its id.
constexpr const char* kafka_message_id_header = "message-id";

/// How the gateway reaches and uses a Kafka cluster, parsed once at start.
struct kafka_settings {
  /// "host:port,host:port".
  std::string bootstrap_servers;
  /// librdkafka properties applied to producer and consumers alike
  /// (security.protocol, ssl.*, sasl.*, ...), in order; later ones win.
  std::vector<std::pair<std::string, std::string>> properties;
  std::string client_id = "troupe";
  /// A published event the cluster has not acknowledged within this fails,
  /// so the relay retries it. Keep it below events.relay.publish_timeout.
  std::chrono::milliseconds delivery_timeout = std::chrono::seconds(5);
  /// A consumer that does not answer a record within this gets it again.
  std::chrono::milliseconds consumer_timeout = std::chrono::seconds(10);
  /// Wait before a record the consumer refused is handed to it again.
  std::chrono::milliseconds redeliver_delay = std::chrono::milliseconds(200);
  /// Records a subscription holds per partition before it pauses fetching.
  uint32_t max_buffered = 1000;
};

/// Declares the `events.kafka.*` keys; declaring twice is a no-op.
void declare_kafka_config(config_schema& schema);

/// Throws config_error naming the key on bad input: an empty bootstrap list,
/// a property that is not `name=value`, or one librdkafka rejects.
kafka_settings kafka_settings_from(const config& cfg);

/// An idempotent producer (acks=all) behind the publisher interface: topic =
/// destination, key = event key, the event's headers plus its id as
/// `message-id`. Each reply entry is empty once the cluster acknowledged that
/// event, else the error; per key, an event is acknowledged only if every
/// earlier event of its key in the call was. An unreachable cluster fails
/// events after `delivery_timeout`; it never blocks the caller. Stop it with
/// an exit message or by dropping every handle; events not yet acknowledged
/// then fail at their caller, which retries them. Throws config_error when
/// librdkafka rejects the settings.
publisher_actor spawn_kafka_publisher(caf::actor_system& sys, kafka_settings settings);

/// One consumer-group member reading one topic on a thread of its own. Each
/// record (or, for a batch consumer, each run of up to its batch size of a
/// partition's buffered records) goes to the consumer actor as a request; an
/// offset is committed only after the consumer handled its record. Records
/// of one partition are handed over one delivery at a time in order; an
/// error or no answer hands the first record not handled over again. After a rebalance,
/// records that were not acknowledged are delivered to the partition's new owner, so
/// nothing is lost (at-least-once).
class kafka_subscription {
public:
  struct impl;
  explicit kafka_subscription(std::unique_ptr<impl> p);
  kafka_subscription(const kafka_subscription&) = delete;
  kafka_subscription& operator=(const kafka_subscription&) = delete;
  /// Stops (see stop()).
  ~kafka_subscription();

  /// Leaves the group (committing what was acknowledged) and joins the poll
  /// thread. Acknowledgements arriving later commit nothing. Idempotent.
  void stop();

  /// Records the consumer acknowledged so far.
  uint64_t acknowledged() const;

private:
  std::unique_ptr<impl> impl_;
};

/// Joins consumer group `group` on `topic` and starts delivering to
/// `consumer`. A group without committed offsets starts at the oldest
/// record. Throws config_error when librdkafka rejects the settings.
std::unique_ptr<kafka_subscription> subscribe_kafka(caf::actor_system& sys,
                                                    kafka_settings settings,
                                                    std::string topic, std::string group,
                                                    event_subscriber consumer);

} // namespace troupe
