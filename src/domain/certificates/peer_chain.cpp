#include "domain/certificates/peer_chain.hpp"

#include "domain/certificates/x509.hpp"

#include <openssl/ssl.h>

namespace hub::certificates {

client_chain client_chain_of(const ssl_st* ssl) {
  client_chain out;
  if (ssl == nullptr) return out;
  const X509* leaf = SSL_get0_peer_certificate(ssl);
  if (leaf == nullptr) return out;
  out.leaf = detail::to_der(leaf);
  // On a server this excludes the leaf; on a resumed session it is empty (see device_auth.hpp).
  STACK_OF(X509)* sent = SSL_get_peer_cert_chain(ssl);
  const int n = sent != nullptr ? sk_X509_num(sent) : 0;
  for (int i = 0; i < n; ++i) {
    std::string der = detail::to_der(sk_X509_value(sent, i));
    if (!der.empty() && der != out.leaf) out.others.push_back(std::move(der));
  }
  return out;
}

}  // namespace hub::certificates
