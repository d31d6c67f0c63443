#include <troupe/runtime/metrics.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include <prometheus/collectable.h>
#include <prometheus/text_serializer.h>

#include <troupe/runtime/logging.hpp>

namespace troupe {

namespace {

// Process metrics in the names the Prometheus client libraries use, read
// from /proc on every scrape.
class process_collector : public prometheus::Collectable {
public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> out;
    std::ifstream stat{"/proc/self/stat"};
    std::string content((std::istreambuf_iterator<char>(stat)),
                        std::istreambuf_iterator<char>());
    auto close = content.rfind(')');
    if (close == std::string::npos)
      return out;
    std::istringstream fields{content.substr(close + 2)};
    std::vector<std::string> f;
    for (std::string s; fields >> s;)
      f.push_back(s);
    // Field numbers from proc(5), shifted by the two fields before ')'.
    if (f.size() < 22)
      return out;
    double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    double cpu = (std::stod(f[11]) + std::stod(f[12])) / ticks;
    double rss = std::stod(f[21]) * static_cast<double>(sysconf(_SC_PAGESIZE));
    double vsize = std::stod(f[20]);
    out.push_back(gauge("process_cpu_seconds_total", "Total user and system CPU time.",
                        cpu, prometheus::MetricType::Counter));
    out.push_back(gauge("process_resident_memory_bytes", "Resident memory size.", rss));
    out.push_back(gauge("process_virtual_memory_bytes", "Virtual memory size.", vsize));
    out.push_back(gauge("process_start_time_seconds",
                        "Start time of the process since the Unix epoch.", start_));
    size_t fds = 0;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
      ++fds;
    out.push_back(
        gauge("process_open_fds", "Open file descriptors.", static_cast<double>(fds)));
    return out;
  }

private:
  static prometheus::MetricFamily
  gauge(std::string name, std::string help, double value,
        prometheus::MetricType type = prometheus::MetricType::Gauge) {
    prometheus::MetricFamily fam;
    fam.name = std::move(name);
    fam.help = std::move(help);
    fam.type = type;
    prometheus::ClientMetric m;
    if (type == prometheus::MetricType::Counter)
      m.counter.value = value;
    else
      m.gauge.value = value;
    fam.metric.push_back(m);
    return fam;
  }

  double start_ =
      static_cast<double>(std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count());
};

// Read from the log writer's queue at scrape time: logging counts its drops
// without touching a metric on the logging thread.
prometheus::MetricFamily log_drops() {
  prometheus::MetricFamily fam;
  fam.name = "troupe_log_messages_dropped_total";
  fam.help = "Log records dropped because the log output could not keep up.";
  fam.type = prometheus::MetricType::Counter;
  prometheus::ClientMetric m;
  m.counter.value = static_cast<double>(log_messages_dropped());
  fam.metric.push_back(m);
  return fam;
}

} // namespace

metrics& metrics::instance() {
  static metrics inst;
  return inst;
}

metrics::metrics()
    : registry_(std::make_shared<prometheus::Registry>()) {
  handled_ = &prometheus::BuildCounter()
                  .Name("troupe_messages_handled_total")
                  .Help("Messages handled, per actor type.")
                  .Register(*registry_);
  handling_seconds_ =
      &prometheus::BuildHistogram()
           .Name("troupe_message_handling_seconds")
           .Help("Time spent handling one message, per actor type (1 in 16 messages "
                 "is timed; troupe_messages_handled_total counts all).")
           .Register(*registry_);
  expired_ = &prometheus::BuildCounter()
                  .Name("troupe_expired_messages_total")
                  .Help("Requests answered with a timeout on arrival, without running "
                        "the handler, because their deadline had passed; per actor type.")
                  .Register(*registry_);
  restarts_ = &prometheus::BuildCounter()
                   .Name("troupe_supervisor_restarts_total")
                   .Help("Children restarted by supervisors.")
                   .Register(*registry_);
  members_ = &prometheus::BuildGauge()
                  .Name("troupe_cluster_members")
                  .Help("Cluster members known to this node, by state.")
                  .Register(*registry_);
  services_ = &prometheus::BuildGauge()
                   .Name("troupe_registry_services")
                   .Help("Service registrations known to this node's registry.")
                   .Register(*registry_);
  process_ = std::make_shared<process_collector>();
}

metrics::actor_type_metrics metrics::for_actor_type(const std::string& type) {
  static const prometheus::Histogram::BucketBoundaries buckets{
      1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0};
  return {&handled_->Add({{"actor_type", type}}),
          &handling_seconds_->Add({{"actor_type", type}}, buckets),
          &expired_->Add({{"actor_type", type}})};
}

prometheus::Counter& metrics::supervisor_restarts(const std::string& supervisor,
                                                  const std::string& child) {
  return restarts_->Add({{"supervisor", supervisor}, {"child", child}});
}

prometheus::Gauge& metrics::cluster_members(const std::string& state) {
  return members_->Add({{"state", state}});
}

prometheus::Gauge& metrics::registry_services() {
  return services_->Add({});
}

std::string metrics::serialize() const {
  prometheus::TextSerializer serializer;
  auto families = registry_->Collect();
  for (auto& fam : process_->Collect())
    families.push_back(std::move(fam));
  families.push_back(log_drops());
  return serializer.Serialize(families);
}

} // namespace troupe
