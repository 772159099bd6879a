// X.509 device authentication: thumbprints for selfSigned identities, chains to the hub's
// verified CA certificates for certificateAuthority ones.
#include "domain/certificates/device_auth.hpp"

#include "base/crypto.hpp"
#include "base/text.hpp"
#include "domain/certificates/model.hpp"
#include "domain/certificates/x509.hpp"

#include <openssl/err.h>
#include <openssl/x509_vfy.h>

#include <fmt/format.h>

namespace hub::certificates {
namespace {

error refused(std::string reason) { return make_error(errc::unauthorized, std::move(reason)); }

std::string who(std::string_view device_id, std::string_view module_id) {
  if (module_id.empty()) return fmt::format("device '{}'", device_id);
  return fmt::format("module '{}' of device '{}'", module_id, device_id);
}

// Registered thumbprints are stored upper-case by the registry; compared ignoring case anyway.
bool thumbprint_matches(std::string_view registered, const parsed_certificate& leaf) {
  if (registered.empty()) return false;
  return text::iequals(registered, leaf.sha1_thumbprint) || text::iequals(registered, leaf.sha256_thumbprint);
}

result<void> check_validity(const parsed_certificate& leaf, sys_time now) {
  if (now < leaf.not_before) {
    return refused(fmt::format("the client certificate is not valid before {}", to_iso8601(leaf.not_before)));
  }
  if (now > leaf.not_after) {
    return refused(fmt::format("the client certificate expired on {}", to_iso8601(leaf.not_after)));
  }
  return {};
}

result<void> check_self_signed(const parsed_certificate& leaf, const registry::authentication& auth,
                               std::string_view device_id, std::string_view module_id, sys_time now) {
  if (!thumbprint_matches(auth.primary_thumbprint, leaf) && !thumbprint_matches(auth.secondary_thumbprint, leaf)) {
    // Both hashes in the log, as IoT Hub's own error text gives them, so an operator can compare.
    return refused(fmt::format("the client certificate (SHA1={}, SHA256={}) matches neither thumbprint of {}",
                               leaf.sha1_thumbprint, leaf.sha256_thumbprint, who(device_id, module_id)));
  }
  return check_validity(leaf, now);
}

struct stack_free {
  void operator()(STACK_OF(X509)* s) const noexcept { sk_X509_pop_free(s, X509_free); }
};
using stack_ptr = std::unique_ptr<STACK_OF(X509), stack_free>;

// Verifies leaf -> client-sent certificates -> one of the anchors at `now`; returns the name of
// the anchor the chain ended at.
result<std::string> verify_chain(X509* leaf, const client_chain& chain, std::span<const trust_anchor> anchors,
                                 sys_time now) {
  if (anchors.empty()) return refused("the hub has no verified CA certificate to check the client certificate against");

  detail::x509_store_ptr store(X509_STORE_new());
  stack_ptr untrusted(sk_X509_new_null());
  detail::x509_store_ctx_ptr ctx(X509_STORE_CTX_new());
  if (!store || !untrusted || !ctx) return make_error(errc::server_error, "out of memory verifying a certificate");

  std::vector<std::pair<std::string, std::string>> anchor_ders;  // (der, name) of anchors actually added
  for (const trust_anchor& a : anchors) {
    auto cert = detail::from_der(a.der);
    if (!cert) continue;  // a stored certificate that no longer parses cannot anchor anything
    if (X509_STORE_add_cert(store.get(), cert.get()) != 1) {
      ERR_clear_error();  // a duplicate of another anchor: already there
      continue;
    }
    anchor_ders.emplace_back(a.der, a.name);
  }

  // The client's extra certificates help build the chain but are never trusted by themselves.
  for (const std::string& der : chain.others) {
    if (der == chain.leaf) continue;
    auto cert = detail::from_der(der);
    if (!cert) return refused("a certificate in the client's chain is not valid DER");
    if (sk_X509_push(untrusted.get(), cert.get()) <= 0) return make_error(errc::server_error, "out of memory");
    cert.release();  // owned by the stack now
  }

  if (X509_STORE_CTX_init(ctx.get(), store.get(), leaf, untrusted.get()) != 1) {
    return make_error(errc::server_error,
                      fmt::format("cannot set up certificate verification: {}", detail::openssl_error()));
  }
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_time(param, static_cast<time_t>(detail::to_time_t(now)));
  // Any certificate in the store is a trust anchor, root or not: IoT Hub accepts a verified
  // intermediate without its root.
  X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);

  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    const int depth = X509_STORE_CTX_get_error_depth(ctx.get());
    X509* at = X509_STORE_CTX_get_current_cert(ctx.get());
    const std::string subject = at != nullptr ? detail::name_text(X509_get_subject_name(at)) : std::string("?");
    ERR_clear_error();
    return refused(fmt::format("the client certificate chain does not verify against the hub's verified CA "
                               "certificates: {} (at depth {}, '{}')",
                               X509_verify_cert_error_string(err), depth, subject));
  }

  // The last certificate of the verified chain is the anchor.
  STACK_OF(X509)* built = X509_STORE_CTX_get0_chain(ctx.get());
  const int n = built != nullptr ? sk_X509_num(built) : 0;
  if (n > 0) {
    const std::string top = detail::to_der(sk_X509_value(built, n - 1));
    for (const auto& [der, name] : anchor_ders) {
      if (der == top) return name;
    }
  }
  return std::string{};
}

result<std::string> check_certificate_authority(X509* leaf_cert, const parsed_certificate& leaf,
                                                const client_chain& chain, std::string_view device_id,
                                                std::string_view module_id, std::span<const trust_anchor> anchors,
                                                sys_time now) {
  const std::string expected = expected_common_name(device_id, module_id);
  const auto cn = detail::single_common_name(leaf_cert);
  if (!cn) {
    return refused(fmt::format("the client certificate's subject '{}' must have exactly one CN, '{}'", leaf.subject,
                               expected));
  }
  if (*cn != expected) {
    return refused(fmt::format("the client certificate's CN '{}' is not '{}', as {} requires", *cn, expected,
                               who(device_id, module_id)));
  }
  return verify_chain(leaf_cert, chain, anchors, now);
}

}  // namespace

std::string expected_common_name(std::string_view device_id, std::string_view module_id) {
  if (module_id.empty()) return std::string(device_id);
  return fmt::format("{}/{}", device_id, module_id);
}

result<device_certificate> check_device_certificate(const client_chain& chain, const registry::authentication& auth,
                                                    std::string_view device_id, std::string_view module_id,
                                                    std::span<const trust_anchor> anchors, sys_time now) {
  if (chain.leaf.empty()) return refused(fmt::format("{} presented no client certificate", who(device_id, module_id)));
  auto leaf_cert = detail::from_der(chain.leaf);
  if (!leaf_cert) return refused("the client certificate is not a valid DER-encoded X.509 certificate");
  auto leaf = parse_certificate_der(chain.leaf);
  if (!leaf) return refused(fmt::format("the client certificate is unusable: {}", leaf.error().message));

  device_certificate out;
  out.device_id = std::string(device_id);
  out.module_id = std::string(module_id);
  out.method = auth.type;
  out.subject = leaf->subject;
  out.sha1_thumbprint = leaf->sha1_thumbprint;
  out.sha256_thumbprint = leaf->sha256_thumbprint;
  out.not_after = leaf->not_after;

  switch (auth.type) {
    case registry::auth_type::self_signed: {
      if (auto ok = check_self_signed(*leaf, auth, device_id, module_id, now); !ok) return ok.error();
      return out;
    }
    case registry::auth_type::certificate_authority: {
      auto anchor = check_certificate_authority(leaf_cert.get(), *leaf, chain, device_id, module_id, anchors, now);
      if (!anchor) return anchor.error();
      out.anchor_name = std::move(*anchor);
      return out;
    }
    case registry::auth_type::sas:
    case registry::auth_type::none:
      break;
  }
  return refused(fmt::format("{} uses {} authentication, not X.509", who(device_id, module_id),
                             registry::to_string(auth.type)));
}

}  // namespace hub::certificates
