#pragma once
// X.509 authentication of a device or module, for the MQTT and AMQP heads, after the TLS
// handshake. Stable API: heads depend on it.
//
// How a head uses it (no OpenSSL type crosses this header):
//   1. The TLS server context requests a client certificate but does not judge it: SSL_VERIFY_PEER
//      without SSL_VERIFY_FAIL_IF_NO_PEER_CERT, and a verify callback that returns 1. SAS devices
//      send no certificate; X.509 devices send theirs, and the TLS handshake itself proves they
//      hold its private key (CertificateVerify). Whether the certificate is any good for the
//      claimed identity is decided here, once the head knows the claimed device id (MQTT CONNECT
//      username / client id, AMQP link address).
//   2. `client_chain_of(ssl)` (peer_chain.hpp) copies what the client presented as DER.
//   3. `certificates::service::authenticate_device(chain, device_id, module_id)` (service.hpp)
//      looks the identity up and calls check_device_certificate() below with the hub's verified
//      CA certificates. On failure, log error().message with the connection id and refuse the
//      connection with the protocol's "not authorized" (MQTT CONNACK 5): the reason is for the
//      log, never for the device.
//   4. On success, end the connection when the leaf expires (`not_after`), as a SAS token's
//      expiry ends a SAS connection.
// TLS session resumption: a resumed session carries the leaf but not the intermediates
// (SSL_get_peer_cert_chain is empty), so a CA-signed device with intermediates would fail on
// resumption. Heads that accept client certificates should not resume sessions (no tickets,
// no session cache) or re-run a full handshake.
//
// Thread safety: free functions, no shared state.
#include "base/clock.hpp"
#include "base/error.hpp"
#include "domain/registry/model.hpp"

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hub::certificates {

// The certificates a client presented in its TLS handshake, each as DER bytes.
struct client_chain {
  std::string leaf;                 // the client's own certificate; empty when it sent none
  std::vector<std::string> others;  // the rest of what it sent (intermediates, maybe the root),
                                    // in the order sent; a repeat of the leaf is ignored
};

// A verified CA certificate of the hub, as the trust anchor of CA-signed devices.
struct trust_anchor {
  std::string name;  // the certificate's name on the hub (for logs)
  std::string der;
};

// What a successful check proved.
struct device_certificate {
  std::string device_id;
  std::string module_id;            // empty for a device
  registry::auth_type method = registry::auth_type::self_signed;  // self_signed or certificate_authority
  std::string subject;              // of the leaf, "CN=dev-1, O=Contoso" (for logs)
  std::string sha1_thumbprint;      // of the leaf, upper-case hex
  std::string sha256_thumbprint;
  sys_time not_after{};             // the leaf's expiry: end the connection then
  std::string anchor_name;          // certificate_authority: the hub CA the chain ends at
};

// The subject CN a CA-signed certificate must carry: the device id, or "deviceId/moduleId" for a
// module (semantics.md §12).
std::string expected_common_name(std::string_view device_id, std::string_view module_id);

// Checks `chain` against the identity's registered authentication, at time `now`:
//  - selfSigned: the leaf's SHA-1 or SHA-256 thumbprint equals the primary or secondary
//    thumbprint (hex, any case), and the leaf is within its validity period. Its issuer does not
//    matter: a CA-signed certificate may be registered by thumbprint too.
//  - certificateAuthority: the leaf's subject CN equals expected_common_name(), and the chain
//    verifies (OpenSSL X509_verify_cert at `now`) from the leaf through the client-sent
//    certificates (untrusted) to one of `anchors`, a root or an intermediate (partial chains are
//    accepted, as IoT Hub accepts a verified intermediate). Pass only *verified* CA certificates.
//  - sas / none: refused.
// Errors are all errc::unauthorized, with a reason for the log (never for the device). No
// revocation checks (CRL/OCSP), as IoT Hub has none: disable the identity to revoke it.
// Does not look at the identity's status: service::authenticate_device() does.
result<device_certificate> check_device_certificate(const client_chain& chain, const registry::authentication& auth,
                                                    std::string_view device_id, std::string_view module_id,
                                                    std::span<const trust_anchor> anchors, sys_time now);

}  // namespace hub::certificates
