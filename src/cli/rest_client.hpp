#pragma once
// A minimal HTTPS client for hubctl: one request per connection, the server verified against a
// CA file or the system store. Light header; Beast lives in rest_client.cpp only.
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hub::cli {

// A failure hubctl reports as "hubctl: <what()>" with a non-zero exit code.
class cli_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct rest_endpoint {
  std::string host;        // HostName: DNS name or IP literal; also what the certificate must match
  std::uint16_t port = 443;
  std::string ca_file;     // PEM bundle to trust; empty = the system store
};

using header_list = std::vector<std::pair<std::string, std::string>>;

struct rest_reply {
  int status = 0;
  header_list headers;
  std::string body;

  std::optional<std::string_view> header(std::string_view name) const;
};

// Sends one request and reads the reply. Throws cli_error when the server cannot be reached,
// the TLS handshake fails (e.g. an untrusted certificate) or the time runs out.
rest_reply send_request(const rest_endpoint& ep, std::string_view method, std::string_view target,
                        const header_list& headers, std::string_view body,
                        std::chrono::seconds timeout = std::chrono::seconds(30));

}  // namespace hub::cli
