// troupe: the command-line client of troupe's public API over gRPC.
//
// Exit codes (scripts may rely on them):
//   0  success; for `saga watch` and `saga start --watch`: the saga completed
//   1  the watched saga ended compensated, failed_compensation or cancelled
//   2  bad usage or input (also the node's INVALID_ARGUMENT)
//   3  NOT_FOUND: no such saga, saga type, service or method
//   4  retryable: UNAVAILABLE (node down or not ready, circuit open),
//      DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (the hint is printed)
//   5  UNAUTHENTICATED or PERMISSION_DENIED: the token is missing, rejected
//      or lacks a role
//   6  any other error
// Errors go to stderr as one line, "troupe: <CODE>: <message>"; results go
// to stdout, as tables or, with --output json, in protobuf's JSON mapping
// (one object per line; `watch` writes one per change).

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <grpc/health/v1/health.grpc.pb.h>
#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>

#include <troupe/api/v1/sagas.grpc.pb.h>

namespace {

namespace v1 = troupe::api::v1;
namespace health = grpc::health::v1;
namespace pbu = google::protobuf::util;

enum exit_code : int {
  exit_ok = 0,
  exit_saga_failed = 1,
  exit_usage = 2,
  exit_not_found = 3,
  exit_retryable = 4,
  exit_denied = 5,
  exit_other = 6,
};

/// Bad input found by the CLI itself: exit code 2.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// --- small helpers ------------------------------------------------------------

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::replace(s.begin(), s.end(), '\r', ' ');
  return s;
}

void print_error(const std::string& code, const std::string& message) {
  std::cerr << "troupe: " << code << ": " << one_line(message) << std::endl;
}

std::string lower(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string upper(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string read_file(const std::string& path, const std::string& what) {
  if (path == "-") {
    return std::string{std::istreambuf_iterator<char>{std::cin},
                       std::istreambuf_iterator<char>{}};
  }
  std::ifstream in{path, std::ios::binary};
  if (!in)
    throw usage_error("cannot read " + what + " " + path);
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

/// "250ms", "10s", "2m", "1h", "1.5s"; a bare number is seconds.
std::chrono::milliseconds parse_duration(const std::string& text,
                                         const std::string& what) {
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    throw usage_error(what + " must be a duration such as 500ms, 10s or 2m, not '" +
                      text + "'");
  }
  auto unit = text.substr(used);
  double ms_per_unit = 0;
  if (unit.empty() || unit == "s")
    ms_per_unit = 1000;
  else if (unit == "ms")
    ms_per_unit = 1;
  else if (unit == "m" || unit == "min")
    ms_per_unit = 60'000;
  else if (unit == "h")
    ms_per_unit = 3'600'000;
  if (ms_per_unit == 0 || !(value > 0) || value * ms_per_unit > 1e12)
    throw usage_error(what +
                      " must be a positive duration such as 500ms, 10s or 2m, not '" +
                      text + "'");
  return std::chrono::milliseconds{static_cast<long long>(value * ms_per_unit)};
}

google::protobuf::Struct parse_object(const std::string& json, const std::string& what) {
  google::protobuf::Struct out;
  auto st = pbu::JsonStringToMessage(json, &out, pbu::JsonParseOptions{});
  if (!st.ok()) {
    std::string why{st.message()};
    while (!why.empty() && (why.front() == ':' || why.front() == ' '))
      why.erase(0, 1);
    throw usage_error(what + " is not a JSON object: " + why);
  }
  return out;
}

std::string json_of(const google::protobuf::Message& msg, bool pretty = false) {
  pbu::JsonPrintOptions opts;
  opts.always_print_primitive_fields = true;
  opts.add_whitespace = pretty;
  std::string out;
  (void)pbu::MessageToJsonString(msg, &out, opts);
  if (!out.empty() && out.back() == '\n')
    out.pop_back();
  return out;
}

// "SAGA_STATE_COMPENSATING" -> "compensating"
std::string saga_state_name(v1::SagaState s) {
  auto name = v1::SagaState_Name(s);
  return lower(name.substr(std::min(name.size(), std::string{"SAGA_STATE_"}.size())));
}

std::string step_state_name(v1::StepState s) {
  auto name = v1::StepState_Name(s);
  return lower(name.substr(std::min(name.size(), std::string{"STEP_STATE_"}.size())));
}

std::optional<v1::SagaState> parse_saga_state(const std::string& text) {
  auto name = upper(text);
  if (name.rfind("SAGA_STATE_", 0) != 0)
    name = "SAGA_STATE_" + name;
  v1::SagaState s;
  if (!v1::SagaState_Parse(name, &s))
    return std::nullopt;
  return s;
}

bool is_end_state(v1::SagaState s) {
  return s == v1::SAGA_STATE_COMPLETED || s == v1::SAGA_STATE_COMPENSATED ||
         s == v1::SAGA_STATE_FAILED_COMPENSATION || s == v1::SAGA_STATE_CANCELLED;
}

std::string time_text(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0)
    return "-";
  // Milliseconds are plenty for people; JSON keeps the full precision.
  auto shown = t;
  shown.set_nanos(t.nanos() / 1'000'000 * 1'000'000);
  return pbu::TimeUtil::ToString(shown);
}

std::string or_dash(const std::string& s) {
  return s.empty() ? "-" : s;
}

void print_table(const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(header.size());
  for (std::size_t i = 0; i < header.size(); ++i)
    width[i] = header[i].size();
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size() && i < width.size(); ++i)
      width[i] = std::max(width[i], row[i].size());
  auto print_row = [&](const std::vector<std::string>& row) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size())
        line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    std::cout << line << '\n';
  };
  print_row(header);
  for (const auto& row : rows)
    print_row(row);
}

const char* status_code_name(grpc::StatusCode code) {
  switch (code) {
  case grpc::StatusCode::OK:
    return "OK";
  case grpc::StatusCode::CANCELLED:
    return "CANCELLED";
  case grpc::StatusCode::UNKNOWN:
    return "UNKNOWN";
  case grpc::StatusCode::INVALID_ARGUMENT:
    return "INVALID_ARGUMENT";
  case grpc::StatusCode::DEADLINE_EXCEEDED:
    return "DEADLINE_EXCEEDED";
  case grpc::StatusCode::NOT_FOUND:
    return "NOT_FOUND";
  case grpc::StatusCode::ALREADY_EXISTS:
    return "ALREADY_EXISTS";
  case grpc::StatusCode::PERMISSION_DENIED:
    return "PERMISSION_DENIED";
  case grpc::StatusCode::RESOURCE_EXHAUSTED:
    return "RESOURCE_EXHAUSTED";
  case grpc::StatusCode::FAILED_PRECONDITION:
    return "FAILED_PRECONDITION";
  case grpc::StatusCode::ABORTED:
    return "ABORTED";
  case grpc::StatusCode::OUT_OF_RANGE:
    return "OUT_OF_RANGE";
  case grpc::StatusCode::UNIMPLEMENTED:
    return "UNIMPLEMENTED";
  case grpc::StatusCode::INTERNAL:
    return "INTERNAL";
  case grpc::StatusCode::UNAVAILABLE:
    return "UNAVAILABLE";
  case grpc::StatusCode::DATA_LOSS:
    return "DATA_LOSS";
  case grpc::StatusCode::UNAUTHENTICATED:
    return "UNAUTHENTICATED";
  default:
    return "UNKNOWN";
  }
}

int exit_code_of(grpc::StatusCode code) {
  switch (code) {
  case grpc::StatusCode::OK:
    return exit_ok;
  case grpc::StatusCode::INVALID_ARGUMENT:
    return exit_usage;
  case grpc::StatusCode::NOT_FOUND:
    return exit_not_found;
  case grpc::StatusCode::UNAVAILABLE:
  case grpc::StatusCode::DEADLINE_EXCEEDED:
  case grpc::StatusCode::RESOURCE_EXHAUSTED:
    return exit_retryable;
  case grpc::StatusCode::UNAUTHENTICATED:
  case grpc::StatusCode::PERMISSION_DENIED:
    return exit_denied;
  default:
    return exit_other;
  }
}

std::optional<std::string>
metadata_value(const std::multimap<grpc::string_ref, grpc::string_ref>& md,
               const std::string& key) {
  auto it = md.find(key);
  if (it == md.end())
    return std::nullopt;
  return std::string{it->second.data(), it->second.size()};
}

// --- the client ---------------------------------------------------------------

struct global_options {
  std::string address = "127.0.0.1:7070";
  bool tls = false;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string token;
  std::string token_file;
  std::string timeout = "10s";
  std::string output = "human";
};

class client {
public:
  explicit client(const global_options& o)
      : json_(o.output == "json")
      , timeout_(parse_duration(o.timeout, "--timeout")) {
    std::shared_ptr<grpc::ChannelCredentials> creds;
    if (o.tls || !o.tls_ca.empty() || !o.tls_cert.empty()) {
      grpc::SslCredentialsOptions ssl;
      if (!o.tls_ca.empty())
        ssl.pem_root_certs = read_file(o.tls_ca, "--tls-ca file");
      if (!o.tls_cert.empty()) {
        ssl.pem_cert_chain = read_file(o.tls_cert, "--tls-cert file");
        ssl.pem_private_key = read_file(o.tls_key, "--tls-key file");
      }
      creds = grpc::SslCredentials(ssl);
    } else {
      creds = grpc::InsecureChannelCredentials();
    }
    auto token = o.token;
    if (!o.token_file.empty())
      token = read_file(o.token_file, "--token-file");
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back())))
      token.pop_back();
    if (!token.empty())
      authorization_ = lower(token.substr(0, 7)) == "bearer " ? token : "Bearer " + token;
    channel_ = grpc::CreateChannel(o.address, creds);
    sagas_ = v1::Sagas::NewStub(channel_);
    services_ = v1::Services::NewStub(channel_);
    health_ = health::Health::NewStub(channel_);
  }

  bool json() const noexcept { return json_; }

  /// A context with the token and, unless `deadline` is false, --timeout.
  std::unique_ptr<grpc::ClientContext> context(bool deadline = true) const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (deadline)
      ctx->set_deadline(std::chrono::system_clock::now() + timeout_);
    if (!authorization_.empty())
      ctx->AddMetadata("authorization", authorization_);
    return ctx;
  }

  v1::Sagas::Stub& sagas() { return *sagas_; }
  v1::Services::Stub& services() { return *services_; }
  health::Health::Stub& health() { return *health_; }

  /// Prints a failed call's status as the one error line; its exit code.
  static int fail(const grpc::Status& st, const grpc::ClientContext& ctx) {
    std::string message = st.error_message();
    auto hint = metadata_value(ctx.GetServerTrailingMetadata(), "retry-after");
    if (!hint)
      hint = metadata_value(ctx.GetServerInitialMetadata(), "retry-after");
    if (hint && exit_code_of(st.error_code()) == exit_retryable)
      message += " (retry after " + *hint + "s)";
    print_error(status_code_name(st.error_code()), message);
    return exit_code_of(st.error_code());
  }

private:
  bool json_;
  std::chrono::milliseconds timeout_;
  std::string authorization_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Sagas::Stub> sagas_;
  std::unique_ptr<v1::Services::Stub> services_;
  std::unique_ptr<health::Health::Stub> health_;
};

// --- human output ---------------------------------------------------------------

void print_saga(const v1::Saga& s) {
  std::vector<std::pair<std::string, std::string>> fields{
      {"saga", s.id()},
      {"type", s.saga_type()},
      {"state", saga_state_name(s.state())},
      {"step", or_dash(s.current_step())},
  };
  if (!s.reason().empty())
    fields.emplace_back("reason", s.reason());
  if (s.cancel_requested())
    fields.emplace_back("cancel", "requested");
  if (!s.idempotency_key().empty())
    fields.emplace_back("key", s.idempotency_key());
  if (!s.correlation_id().empty())
    fields.emplace_back("correlation", s.correlation_id());
  fields.emplace_back("created", time_text(s.create_time()));
  fields.emplace_back("updated", time_text(s.update_time()));
  if (s.has_deadline())
    fields.emplace_back("deadline", time_text(s.deadline()));
  if (s.has_end_time())
    fields.emplace_back("ended", time_text(s.end_time()));
  if (!s.input_text().empty())
    fields.emplace_back("input", s.input_text());
  for (const auto& [name, value] : fields)
    std::cout << name << std::string(13 - name.size(), ' ') << one_line(value) << '\n';
  if (s.steps_size() == 0)
    return;
  std::cout << '\n';
  std::vector<std::vector<std::string>> rows;
  for (const auto& step : s.steps()) {
    std::string error = step.compensation_error().empty()
                            ? step.error()
                            : step.error() + (step.error().empty() ? "" : "; ") +
                                  "compensation: " + step.compensation_error();
    rows.push_back({step.name(), step_state_name(step.state()),
                    std::to_string(step.attempts()), one_line(or_dash(error))});
  }
  print_table({"STEP", "STATE", "ATTEMPTS", "ERROR"}, rows);
}

void print_summaries(const v1::ListSagasResponse& page) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& s : page.sagas())
    rows.push_back({s.id(), s.saga_type(), saga_state_name(s.state()),
                    or_dash(s.current_step()), time_text(s.update_time())});
  print_table({"ID", "TYPE", "STATE", "STEP", "UPDATED"}, rows);
}

/// Prints what changed since the previous update of a watch.
class watch_printer {
public:
  void update(const v1::Saga& s) {
    // The saga's line first on the first update, after its steps' lines on
    // later ones: a step ends before the saga it ends does.
    if (!seen_)
      print_state(s);
    for (int i = 0; i < s.steps_size(); ++i) {
      const auto& step = s.steps(i);
      const v1::Step* before =
          seen_ && i < last_.steps_size() ? &last_.steps(i) : nullptr;
      bool changed = before == nullptr ? step.state() != v1::STEP_STATE_PENDING
                                       : step.state() != before->state() ||
                                             step.attempts() != before->attempts() ||
                                             step.error() != before->error();
      if (!changed)
        continue;
      std::cout << "  step " << step.name() << ": " << step_state_name(step.state());
      if (step.attempts() > 1)
        std::cout << " (attempt " << step.attempts() << ")";
      if (!step.error().empty())
        std::cout << ": " << one_line(step.error());
      std::cout << '\n';
    }
    if (seen_ && s.state() != last_.state())
      print_state(s);
    std::cout.flush();
    last_ = s;
    seen_ = true;
  }

private:
  static void print_state(const v1::Saga& s) {
    std::cout << "saga " << s.id() << " (" << s.saga_type()
              << "): " << saga_state_name(s.state());
    if (!s.reason().empty())
      std::cout << ": " << one_line(s.reason());
    std::cout << '\n';
  }

  bool seen_ = false;
  v1::Saga last_;
};

// --- commands -------------------------------------------------------------------

int outcome_of(v1::SagaState s) {
  return s == v1::SAGA_STATE_COMPLETED ? exit_ok : exit_saga_failed;
}

int watch(client& c, const std::string& id, bool deadline) {
  v1::WatchSagaRequest req;
  req.set_id(id);
  auto ctx = c.context(deadline);
  auto reader = c.sagas().WatchSaga(ctx.get(), req);
  v1::Saga update;
  std::optional<v1::Saga> last;
  watch_printer printer;
  while (reader->Read(&update)) {
    if (c.json())
      std::cout << json_of(update) << std::endl;
    else
      printer.update(update);
    last = update;
  }
  auto st = reader->Finish();
  if (!st.ok())
    return client::fail(st, *ctx);
  if (!last) {
    print_error("UNKNOWN", "the watch of saga " + id + " ended without an update");
    return exit_other;
  }
  if (!is_end_state(last->state())) {
    print_error("UNKNOWN", "the watch of saga " + id + " ended in state " +
                               saga_state_name(last->state()));
    return exit_other;
  }
  return outcome_of(last->state());
}

struct start_options {
  std::string type;
  std::string input;
  std::string input_file;
  std::string key;
  std::string deadline;
  bool watch = false;
};

google::protobuf::Struct input_of(const std::string& input,
                                  const std::string& input_file) {
  if (!input_file.empty())
    return parse_object(read_file(input_file, "--input-file"),
                        "the content of --input-file");
  return parse_object(input, "--input");
}

int start(client& c, const start_options& o, bool timeout_given) {
  v1::StartSagaRequest req;
  req.set_saga_type(o.type);
  *req.mutable_json() = input_of(o.input, o.input_file);
  req.set_idempotency_key(o.key);
  if (!o.deadline.empty()) {
    auto ms = parse_duration(o.deadline, "--deadline");
    req.mutable_deadline()->set_seconds(ms.count() / 1000);
    req.mutable_deadline()->set_nanos(static_cast<int32_t>(ms.count() % 1000) *
                                      1'000'000);
  }
  v1::StartSagaResponse resp;
  auto ctx = c.context();
  auto st = c.sagas().StartSaga(ctx.get(), req, &resp);
  if (!st.ok())
    return client::fail(st, *ctx);
  if (c.json()) {
    std::cout << json_of(resp) << std::endl;
  } else {
    const auto& s = resp.saga();
    std::cout << (resp.created() ? "started " : "already started ") << s.id() << " ("
              << s.saga_type() << "): " << saga_state_name(s.state()) << '\n';
  }
  if (!o.watch)
    return exit_ok;
  if (is_end_state(resp.saga().state()))
    return outcome_of(resp.saga().state());
  return watch(c, resp.saga().id(), timeout_given);
}

int get(client& c, const std::string& id) {
  v1::GetSagaRequest req;
  req.set_id(id);
  v1::Saga saga;
  auto ctx = c.context();
  auto st = c.sagas().GetSaga(ctx.get(), req, &saga);
  if (!st.ok())
    return client::fail(st, *ctx);
  if (c.json())
    std::cout << json_of(saga) << std::endl;
  else
    print_saga(saga);
  return exit_ok;
}

struct list_options {
  std::string type;
  std::string state;
  uint32_t page_size = 0;
  std::string page_token;
  bool all = false;
};

int list(client& c, const list_options& o) {
  v1::ListSagasRequest req;
  req.set_saga_type(o.type);
  if (!o.state.empty()) {
    auto s = parse_saga_state(o.state);
    if (!s)
      throw usage_error(
          "--state must be one of running, compensating, parked, completed, "
          "compensated, failed_compensation, cancelled; not '" +
          o.state + "'");
    req.set_state(*s);
  }
  req.set_page_size(o.page_size);
  req.set_page_token(o.page_token);
  v1::ListSagasResponse all;
  while (true) {
    v1::ListSagasResponse page;
    auto ctx = c.context();
    auto st = c.sagas().ListSagas(ctx.get(), req, &page);
    if (!st.ok())
      return client::fail(st, *ctx);
    if (!o.all) {
      if (c.json()) {
        std::cout << json_of(page) << std::endl;
      } else if (page.sagas_size() == 0) {
        std::cout << "no sagas\n";
      } else {
        print_summaries(page);
        if (!page.next_page_token().empty())
          std::cout << "next page: --page-token " << page.next_page_token() << '\n';
      }
      return exit_ok;
    }
    for (auto& s : *page.mutable_sagas())
      *all.add_sagas() = std::move(s);
    // A token that does not move on would loop forever.
    if (page.next_page_token().empty() || page.next_page_token() == req.page_token())
      break;
    req.set_page_token(page.next_page_token());
  }
  if (c.json())
    std::cout << json_of(all) << std::endl;
  else if (all.sagas_size() == 0)
    std::cout << "no sagas\n";
  else
    print_summaries(all);
  return exit_ok;
}

int cancel(client& c, const std::string& id) {
  v1::CancelSagaRequest req;
  req.set_id(id);
  v1::Saga saga;
  auto ctx = c.context();
  auto st = c.sagas().CancelSaga(ctx.get(), req, &saga);
  if (!st.ok())
    return client::fail(st, *ctx);
  if (c.json())
    std::cout << json_of(saga) << std::endl;
  else
    std::cout << "cancel requested for " << saga.id() << " (" << saga.saga_type()
              << "): " << saga_state_name(saga.state()) << '\n';
  return exit_ok;
}

struct invoke_options {
  std::string service;
  std::string method;
  std::string input = "{}";
  std::string input_file;
};

int invoke(client& c, const invoke_options& o) {
  v1::InvokeRequest req;
  req.set_service(o.service);
  req.set_method(o.method);
  *req.mutable_json() = input_of(o.input, o.input_file);
  v1::InvokeResponse resp;
  auto ctx = c.context();
  auto st = c.services().Invoke(ctx.get(), req, &resp);
  if (!st.ok())
    return client::fail(st, *ctx);
  if (c.json())
    std::cout << json_of(resp) << std::endl;
  else
    std::cout << json_of(resp.json(), true) << std::endl;
  return exit_ok;
}

int check_health(client& c, const std::string& service, const std::string& address) {
  health::HealthCheckRequest req;
  req.set_service(service);
  health::HealthCheckResponse resp;
  auto ctx = c.context();
  auto st = c.health().Check(ctx.get(), req, &resp);
  if (!st.ok())
    return client::fail(st, *ctx);
  if (c.json())
    std::cout << json_of(resp) << std::endl;
  else
    std::cout << address << (service.empty() ? "" : " " + service) << ": "
              << lower(health::HealthCheckResponse::ServingStatus_Name(resp.status()))
              << '\n';
  if (resp.status() == health::HealthCheckResponse::SERVING)
    return exit_ok;
  print_error("UNAVAILABLE", address + " is not serving");
  return exit_retryable;
}

void discard_grpc_log(gpr_log_func_args*) {}

} // namespace

int main(int argc, char** argv) {
  // gRPC's own log lines would break the one-line error contract; they stay
  // available for debugging through GRPC_VERBOSITY.
  if (std::getenv("GRPC_VERBOSITY") == nullptr)
    gpr_set_log_function(discard_grpc_log);

  CLI::App app{
      "troupe: start, inspect, cancel and watch sagas on a troupe node over gRPC"};
  app.require_subcommand(1);
  app.fallthrough();
  global_options g;
  app.add_option("--address", g.address, "host:port of a node's gRPC gateway")
      ->envname("TROUPE_ADDRESS")
      ->capture_default_str();
  app.add_flag("--tls", g.tls, "use TLS with the system's trust roots");
  app.add_option("--tls-ca", g.tls_ca,
                 "PEM file of the CA that signed the node's certificate");
  auto* cert = app.add_option("--tls-cert", g.tls_cert, "PEM client certificate (mTLS)");
  auto* key = app.add_option("--tls-key", g.tls_key, "PEM key of the client certificate");
  cert->needs(key);
  key->needs(cert);
  auto* token = app.add_option("--token", g.token, "bearer token (JWT); never printed")
                    ->envname("TROUPE_TOKEN");
  app.add_option("--token-file", g.token_file, "file holding the bearer token")
      ->excludes(token);
  auto* timeout =
      app.add_option("--timeout", g.timeout, "deadline of each call (watch: none)")
          ->capture_default_str();
  app.add_option("--output", g.output, "human or json")
      ->check(CLI::IsMember({"human", "json"}))
      ->capture_default_str();

  std::function<int(client&)> command;

  auto* saga = app.add_subcommand("saga", "start, get, list, cancel and watch sagas");
  saga->alias("sagas");
  saga->require_subcommand(1);

  start_options so;
  auto* start_cmd = saga->add_subcommand("start", "start a saga");
  start_cmd->add_option("type", so.type, "saga type, e.g. order_processing")->required();
  auto* input = start_cmd->add_option("--input", so.input, "input as a JSON object");
  auto* input_file = start_cmd->add_option("--input-file", so.input_file,
                                           "file with the input JSON (- for stdin)");
  input->excludes(input_file);
  start_cmd->add_option("--key", so.key,
                        "idempotency key: starting again returns the first");
  start_cmd->add_option("--deadline", so.deadline,
                        "overall deadline of the saga, e.g. 30s");
  start_cmd->add_flag("--watch", so.watch, "then watch it to its end state");
  start_cmd->callback([&] {
    if (so.input.empty() && so.input_file.empty())
      throw CLI::RequiredError("--input or --input-file");
    command = [&](client& c) { return start(c, so, timeout->count() > 0); };
  });

  std::string id;
  auto* get_cmd = saga->add_subcommand("get", "one saga with its steps");
  get_cmd->add_option("id", id, "saga id")->required();
  get_cmd->callback([&] { command = [&](client& c) { return get(c, id); }; });

  list_options lo;
  auto* list_cmd = saga->add_subcommand("list", "sagas of every node, oldest first");
  list_cmd->add_option("--type", lo.type, "only this saga type");
  list_cmd->add_option("--state", lo.state, "only this state, e.g. running");
  list_cmd
      ->add_option("--page-size", lo.page_size,
                   "sagas per page (default 50, at most 1000)")
      ->check(CLI::Range(1u, 1000u));
  list_cmd->add_option("--page-token", lo.page_token, "from the previous page");
  list_cmd->add_flag("--all", lo.all, "follow every page");
  list_cmd->callback([&] { command = [&](client& c) { return list(c, lo); }; });

  auto* cancel_cmd =
      saga->add_subcommand("cancel", "stop a saga and compensate its steps");
  cancel_cmd->add_option("id", id, "saga id")->required();
  cancel_cmd->callback([&] { command = [&](client& c) { return cancel(c, id); }; });

  auto* watch_cmd =
      saga->add_subcommand("watch", "follow a saga step by step to its end");
  watch_cmd->add_option("id", id, "saga id")->required();
  watch_cmd->callback(
      [&] { command = [&](client& c) { return watch(c, id, timeout->count() > 0); }; });

  invoke_options io;
  auto* invoke_cmd = app.add_subcommand("invoke", "call a method a service exposed");
  invoke_cmd->add_option("service", io.service, "service name, e.g. greeter")->required();
  invoke_cmd->add_option("method", io.method, "method name, e.g. greet")->required();
  auto* invoke_input =
      invoke_cmd->add_option("--input", io.input, "request as a JSON object")
          ->capture_default_str();
  invoke_cmd->add_option("--input-file", io.input_file, "file with the request JSON")
      ->excludes(invoke_input);
  invoke_cmd->callback([&] { command = [&](client& c) { return invoke(c, io); }; });

  std::string health_service;
  auto* health_cmd =
      app.add_subcommand("health", "whether the node serves (grpc.health.v1)");
  health_cmd->alias("status");
  health_cmd->add_option("--service", health_service, "a service name; empty: the node");
  health_cmd->callback([&] {
    command = [&](client& c) { return check_health(c, health_service, g.address); };
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    print_error("INVALID_ARGUMENT", e.what());
    return exit_usage;
  }

  try {
    client c{g};
    return command(c);
  } catch (const usage_error& e) {
    print_error("INVALID_ARGUMENT", e.what());
    return exit_usage;
  } catch (const std::exception& e) {
    print_error("UNKNOWN", e.what());
    return exit_other;
  }
}
