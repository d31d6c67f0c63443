#include "support/test_certs.hpp"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "support/node_process.hpp"

namespace troupe::test {

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// node_process executes a path, not a name: look it up like a shell would.
std::string openssl_program() {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/bin:/bin";
  while (!dirs.empty()) {
    auto colon = dirs.find(':');
    auto dir = dirs.substr(0, colon);
    auto candidate = fs::path{std::string{dir}} / "openssl";
    std::error_code ec;
    if (!dir.empty() && fs::is_regular_file(candidate, ec))
      return candidate.string();
    if (colon == std::string_view::npos)
      break;
    dirs.remove_prefix(colon + 1);
  }
  throw std::runtime_error("openssl not found on PATH");
}

void openssl(std::vector<std::string> args) {
  std::string line = "openssl";
  for (const auto& a : args)
    line += " " + a;
  node_process p{openssl_program(), std::move(args), {}, "openssl"};
  auto code = p.wait_exit(within(60s));
  if (!code || *code != 0)
    throw std::runtime_error("`" + line + "` failed:\n" + p.output());
}

void write_file(const fs::path& file, std::string_view content) {
  std::ofstream out{file, std::ios::binary | std::ios::trunc};
  out << content;
  if (!out)
    throw std::runtime_error("cannot write " + file.string());
}

// P-256 keys: quick to generate, and every TLS stack we use accepts them.
void ec_key(const fs::path& key) {
  openssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
           key.string()});
}

void self_signed_ca(const fs::path& dir, const std::string& name, const std::string& cn) {
  ec_key(dir / (name + ".key"));
  openssl({"req", "-x509", "-new", "-key", (dir / (name + ".key")).string(), "-sha256",
           "-days", "2", "-subj", "/CN=" + cn, "-addext",
           "basicConstraints=critical,CA:TRUE", "-addext",
           "keyUsage=critical,keyCertSign,cRLSign", "-out",
           (dir / (name + ".pem")).string()});
}

void signed_leaf(const fs::path& dir, const std::string& name, const std::string& cn,
                 const std::string& ca, const std::string& extensions) {
  auto key = dir / (name + ".key");
  auto csr = dir / (name + ".csr");
  auto ext = dir / (name + ".ext");
  ec_key(key);
  openssl(
      {"req", "-new", "-key", key.string(), "-subj", "/CN=" + cn, "-out", csr.string()});
  write_file(ext, extensions);
  openssl({"x509", "-req", "-in", csr.string(), "-CA", (dir / (ca + ".pem")).string(),
           "-CAkey", (dir / (ca + ".key")).string(), "-CAcreateserial", "-sha256",
           "-days", "2", "-extfile", ext.string(), "-out",
           (dir / (name + ".pem")).string()});
}

} // namespace

test_certs make_test_certs(const fs::path& dir) {
  self_signed_ca(dir, "ca", "troupe test CA");
  signed_leaf(dir, "server", "localhost", "ca",
              "basicConstraints=CA:FALSE\n"
              "keyUsage=critical,digitalSignature,keyEncipherment\n"
              "extendedKeyUsage=serverAuth\n"
              "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  signed_leaf(dir, "client", "troupe-test-client", "ca",
              "basicConstraints=CA:FALSE\n"
              "keyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=clientAuth\n");
  self_signed_ca(dir, "rogue-ca", "nobody's CA");
  signed_leaf(dir, "rogue-client", "troupe-rogue-client", "rogue-ca",
              "basicConstraints=CA:FALSE\n"
              "keyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=clientAuth\n");
  const std::string node_usage = "basicConstraints=CA:FALSE\n"
                                 "keyUsage=critical,digitalSignature,keyEncipherment\n"
                                 "extendedKeyUsage=serverAuth,clientAuth\n"
                                 "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
  signed_leaf(dir, "node", "troupe-test-node", "ca", node_usage);
  signed_leaf(dir, "rogue-node", "troupe-rogue-node", "rogue-ca", node_usage);
  test_certs c;
  c.node_cert = dir / "node.pem";
  c.node_key = dir / "node.key";
  c.rogue_node_cert = dir / "rogue-node.pem";
  c.rogue_node_key = dir / "rogue-node.key";
  c.ca_cert = dir / "ca.pem";
  c.ca_key = dir / "ca.key";
  c.server_cert = dir / "server.pem";
  c.server_key = dir / "server.key";
  c.client_cert = dir / "client.pem";
  c.client_key = dir / "client.key";
  c.rogue_client_cert = dir / "rogue-client.pem";
  c.rogue_client_key = dir / "rogue-client.key";
  return c;
}

rsa_key_pair make_rsa_key_pair(const fs::path& dir, const std::string& name) {
  rsa_key_pair k;
  k.private_key = dir / (name + ".key");
  k.public_key = dir / (name + ".pub");
  openssl({"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
           k.private_key.string()});
  openssl(
      {"pkey", "-in", k.private_key.string(), "-pubout", "-out", k.public_key.string()});
  return k;
}

std::string read_text_file(const fs::path& file) {
  std::ifstream in{file, std::ios::binary};
  if (!in)
    throw std::runtime_error("cannot read " + file.string());
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

} // namespace troupe::test
