#pragma once
// The certificates hubd serves TLS with: a local CA and a server certificate it signs.
//
// First start creates both in the data folder. Later starts reuse the CA (so clients keep trusting
// it, and users or tests can bring their own ca.pem + ca.key) and reissue the server certificate
// only when it no longer fits: missing, signed by another CA, expiring within 30 days, or not
// covering the host name and bound addresses, or its key readable by others. A CA outside its
// validity period, or whose key other users can access, stops the start. OpenSSL 3 only; no
// Asio. Runs at startup, so failures throw startup_error with one line naming the file.
#include "base/clock.hpp"
#include "server/files.hpp"

#include <string>
#include <vector>

namespace hub::server {

struct tls_names {
  std::string host_name;               // DNS name or IP literal clients connect to
  std::vector<std::string> addresses;  // bound addresses; wildcards ("::", "0.0.0.0") are skipped
};

struct tls_report {
  bool ca_created = false;
  bool server_cert_issued = false;
  std::string reason;        // why the server certificate was (re)issued; empty when reused
  std::string ca_subject;    // e.g. "CN=hubd local CA 1a2b3c4d"
  std::vector<std::string> subject_alt_names;  // of the server certificate, e.g. "DNS:localhost"
  sys_time server_not_after{};
  std::vector<std::string> warnings;  // for the log: a CA close to expiry, a CA key its group can read
};

// Ensures DIR/ca.pem, ca.key, server.pem and server.key exist and fit `names`.
tls_report ensure_tls_material(const data_layout& layout, const tls_names& names, sys_time now);

// The SANs a server certificate for `names` must carry, in the order they are written:
// the host name (DNS or IP), DNS:localhost, IP:127.0.0.1, IP:::1, then every non-wildcard address.
std::vector<std::string> required_alt_names(const tls_names& names);

// True for an IPv4 or IPv6 literal (brackets not accepted).
bool is_ip_literal(const std::string& text);

}  // namespace hub::server
