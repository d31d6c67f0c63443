// The baseline of gateway_http_bench: a minimal Boost.Beast HTTP/1.1 server
// (keep-alive, asynchronous, one I/O thread like the gateway's default) that
// answers every POST with a constant JSON body of --post-bytes and every
// other request with one of --get-bytes. What the gateway adds on top of
// this is its cost.
//
//   bare_http_server --post-bytes 900 --get-bytes 1200 [--port 0] [--threads 1]
//   -> "bare http server listening on 127.0.0.1:<port>", serves until SIGTERM

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>
// Boost 1.74's asio uses std::exchange without including <utility> in C++20.
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct replies {
  std::string post_body;
  std::string get_body;
};

// A JSON object of exactly `bytes` bytes (at least 12).
std::string constant_json(size_t bytes) {
  std::string head = R"({"pad":")";
  std::string tail = R"("})";
  if (bytes < head.size() + tail.size())
    bytes = head.size() + tail.size();
  return head + std::string(bytes - head.size() - tail.size(), 'x') + tail;
}

class session : public std::enable_shared_from_this<session> {
public:
  session(tcp::socket socket, const replies& r)
      : stream_(std::move(socket))
      , replies_(r) {}

  void read() {
    req_ = {};
    http::async_read(stream_, buffer_, req_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (!ec)
                         self->answer();
                     });
  }

private:
  void answer() {
    bool post = req_.method() == http::verb::post;
    res_ = {};
    res_.version(11);
    res_.result(post ? http::status::created : http::status::ok);
    res_.set(http::field::content_type, "application/json");
    res_.set("x-request-id", "bare");
    res_.body() = post ? replies_.post_body : replies_.get_body;
    res_.keep_alive(req_.keep_alive());
    res_.prepare_payload();
    http::async_write(stream_, res_,
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        if (!ec && self->res_.keep_alive())
                          self->read();
                      });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> req_;
  http::response<http::string_body> res_;
  const replies& replies_;
};

void accept(tcp::acceptor& acceptor, asio::io_context& io, const replies& r) {
  acceptor.async_accept(asio::make_strand(io),
                        [&](beast::error_code ec, tcp::socket socket) {
                          if (!ec) {
                            socket.set_option(tcp::no_delay(true), ec);
                            std::make_shared<session>(std::move(socket), r)->read();
                          }
                          accept(acceptor, io, r);
                        });
}

} // namespace

int main(int argc, char** argv) {
  uint16_t port = 0;
  size_t post_bytes = 512;
  size_t get_bytes = 512;
  int threads = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string key = argv[i];
    long value = std::strtol(argv[i + 1], nullptr, 10);
    if (key == "--port")
      port = static_cast<uint16_t>(value);
    else if (key == "--post-bytes")
      post_bytes = static_cast<size_t>(value);
    else if (key == "--get-bytes")
      get_bytes = static_cast<size_t>(value);
    else if (key == "--threads")
      threads = static_cast<int>(std::max(1L, value));
    else {
      std::fprintf(stderr, "unknown option %s\n", key.c_str());
      return 2;
    }
  }
  replies r{constant_json(post_bytes), constant_json(get_bytes)};
  asio::io_context io{threads};
  tcp::acceptor acceptor{io, {asio::ip::make_address("127.0.0.1"), port}};
  accept(acceptor, io, r);
  asio::signal_set signals{io, SIGTERM, SIGINT};
  signals.async_wait([&](beast::error_code, int) { io.stop(); });
  std::printf("bare http server listening on 127.0.0.1:%u\n",
              static_cast<unsigned>(acceptor.local_endpoint().port()));
  std::fflush(stdout);
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i)
    pool.emplace_back([&] { io.run(); });
  io.run();
  for (auto& t : pool)
    t.join();
  return 0;
}
