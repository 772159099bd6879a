#pragma once
// hubd-loadgen --fast-ec-decode: has OpenSSL 3.0 decode the EC keys of received certificates
// with its legacy decoder instead of building a provider decoder context per certificate (the
// biggest single item of a TLS client handshake's CPU in OpenSSL 3.0). Verification is
// unchanged. Call once, before the first handshake. False if OpenSSL refused (then nothing
// changed).

namespace loadgen {

bool use_legacy_ec_key_decoding();

}  // namespace loadgen
