#pragma once
// The webhook endpoints' HTTPS client (routing::webhook_transport): Beast over Asio SSL, in
// webhook_client.cpp only. One connection per POST (no keep-alive: one request in flight per
// endpoint, seconds apart when retrying), TLS 1.2+, the server verified against the endpoint's
// caFile (else the system store) and its host name (or IP SAN), 30 s for the whole exchange.
#include "domain/routing/webhook.hpp"

#include <filesystem>
#include <memory>

namespace hub::server {

// Throws startup_error when the CA file cannot be read. A relative caFile is taken from `base`.
std::unique_ptr<routing::webhook_transport> make_webhook_client(const routing::webhook_endpoint& ep,
                                                                const std::filesystem::path& base);

}  // namespace hub::server
