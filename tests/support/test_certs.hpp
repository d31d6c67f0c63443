#pragma once

// Test certificates and keys made with the `openssl` command into a
// directory, for TLS, mTLS and RS256 tests:
//
//   troupe::test::temp_dir dir;
//   auto certs = troupe::test::make_test_certs(dir.path());
//   // certs.server_cert / server_key: valid for 127.0.0.1 and localhost,
//   //   signed by certs.ca_cert (give it to clients as their trust root)
//   // certs.client_cert / client_key: signed by certs.ca_cert (mTLS)
//   // certs.rogue_client_cert / rogue_client_key: signed by another CA
//   // certs.node_cert / node_key: a cluster node's (server and client use)
//   // certs.rogue_node_cert / rogue_node_key: the same from another CA
//   auto keys = troupe::test::make_rsa_key_pair(dir.path(), "jwt");
//   // keys.private_key / public_key: PEM files for RS256 tokens
//
// Files are PEM; everything is valid for two days. Each call throws
// std::runtime_error with openssl's output when a command fails.

#include <filesystem>
#include <string>

namespace troupe::test {

struct test_certs {
  std::filesystem::path ca_cert;
  std::filesystem::path ca_key;
  std::filesystem::path server_cert; ///< SAN IP:127.0.0.1, DNS:localhost
  std::filesystem::path server_key;
  std::filesystem::path client_cert; ///< CN=troupe-test-client, signed by ca_cert
  std::filesystem::path client_key;
  std::filesystem::path rogue_client_cert; ///< signed by a CA nobody trusts
  std::filesystem::path rogue_client_key;
  /// Cluster nodes: server and client use, signed by ca_cert.
  std::filesystem::path node_cert;
  std::filesystem::path node_key;
  /// A node certificate signed by the CA nobody trusts.
  std::filesystem::path rogue_node_cert;
  std::filesystem::path rogue_node_key;
};

/// Generates a CA, a server and a client certificate (and a rogue client's)
/// into `dir`, which must exist.
test_certs make_test_certs(const std::filesystem::path& dir);

struct rsa_key_pair {
  std::filesystem::path private_key; ///< PKCS#8 PEM
  std::filesystem::path public_key;  ///< SubjectPublicKeyInfo PEM
};

/// A 2048-bit RSA key pair as <dir>/<name>.key and <dir>/<name>.pub.
rsa_key_pair make_rsa_key_pair(const std::filesystem::path& dir,
                               const std::string& name = "jwt");

/// The whole content of `file`; throws std::runtime_error when unreadable.
std::string read_text_file(const std::filesystem::path& file);

} // namespace troupe::test
