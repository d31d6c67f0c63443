#pragma once

// TLS material from config: a path, or the PEM text itself when a
// ${file:…} or ${env:…} secret handed over the content. The cluster gate and
// both gateways load certificates, keys and CAs through this one reader.

#include <string>

namespace troupe::detail {

/// Whether `value` is PEM text rather than a path.
bool is_pem_text(const std::string& value);

/// The PEM text `value` stands for: itself, or the contents of the file it
/// names. Throws std::runtime_error naming the config `key` and the path
/// (never the text: it is a secret) when the file is unreadable or empty.
std::string pem_material(const std::string& value, const char* key);

/// How an error message names `value`: the path, or "the PEM text given".
std::string pem_source(const std::string& value);

} // namespace troupe::detail
