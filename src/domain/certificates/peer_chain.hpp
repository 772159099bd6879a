#pragma once
// The bridge from an OpenSSL TLS connection to device_auth.hpp, for the heads. Only a forward
// declaration of OpenSSL's SSL type: including this header costs nothing.
#include "domain/certificates/device_auth.hpp"

struct ssl_st;  // OpenSSL's SSL

namespace hub::certificates {

// What the client presented in the handshake of `ssl` (e.g. `stream.native_handle()` of an
// asio::ssl::stream), as DER: its certificate (SSL_get0_peer_certificate) and the other
// certificates it sent (SSL_get_peer_cert_chain, which on a server excludes the leaf). An empty
// chain when the client sent no certificate. Call it after the handshake, on the connection's
// own thread.
client_chain client_chain_of(const ssl_st* ssl);

}  // namespace hub::certificates
