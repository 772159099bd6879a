// See ec_decode.hpp.
//
// OpenSSL 3.0 (crypto/x509/x_pubkey.c, x509_pubkey_ex_d2i_ex) decodes the key of every
// certificate it parses with OSSL_DECODER_CTX_new_for_pkey, which builds a decoder context from
// scratch each time (every key manager and decoder of the providers enumerated, names compared,
// locks taken): measured with callgrind, 2.4 M instructions of the generator's 7.3 M per connect,
// more than the two ECDSA verifications of the handshake together. It takes the legacy decoder
// (EC_KEY, a few thousand instructions) only when an ENGINE is registered for the key type. So
// the generator registers one whose EC method is OpenSSL's own built-in one: the certificate is
// still parsed and its key decoded, and the chain and the handshake signature are still
// verified, by the same library code a device using OpenSSL 1.1 (or 3.x with an engine) runs.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "bench/loadgen/ec_decode.hpp"

#include <openssl/engine.h>
#include <openssl/evp.h>

namespace loadgen {
namespace {

const int ec_nids[] = {EVP_PKEY_EC};

int ec_pkey_meths(ENGINE*, EVP_PKEY_METHOD** method, const int** nids, int nid) {
  if (method == nullptr) {
    *nids = ec_nids;
    return 1;
  }
  if (nid == EVP_PKEY_EC) {
    *method = const_cast<EVP_PKEY_METHOD*>(EVP_PKEY_meth_find(EVP_PKEY_EC));
    return *method != nullptr ? 1 : 0;
  }
  *method = nullptr;
  return 0;
}

}  // namespace

bool use_legacy_ec_key_decoding() {
  ENGINE* e = ENGINE_new();
  if (e == nullptr) return false;
  const bool ok = ENGINE_set_id(e, "hubd-loadgen-ec") == 1 && ENGINE_set_name(e, "built-in EC, legacy key decoding") == 1 &&
                  ENGINE_set_pkey_meths(e, ec_pkey_meths) == 1 && ENGINE_add(e) == 1 && ENGINE_init(e) == 1 &&
                  ENGINE_set_default_pkey_meths(e) == 1;
  ENGINE_free(e);  // the engine list and the table keep their references
  return ok;
}

}  // namespace loadgen
