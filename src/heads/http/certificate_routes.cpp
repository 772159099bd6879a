// The X.509 CA certificates API. IoT Hub has it only on its resource provider (ARM,
// management.azure.com/.../IotHubs/{hub}/certificates/{name}); hubd has no ARM, so it serves the
// same JSON shapes (CertificateDescription, CertificateWithNonceDescription, api-version
// 2021-07-02 and later) on its service REST API, authorised by the hub's shared access policies:
//   GET    /certificates                                  RegistryRead   {"value":[...]}
//   GET    /certificates/{name}                           RegistryRead
//   PUT    /certificates/{name}                           RegistryWrite  (If-Match to replace)
//   DELETE /certificates/{name}                           RegistryWrite  (If-Match required)
//   POST   /certificates/{name}/generateVerificationCode  RegistryWrite  (If-Match required)
//   POST   /certificates/{name}/verify                    RegistryWrite  (If-Match required)
// Errors use hubd's (IoT Hub data-plane) error body, like every other route here.
#include "base/json.hpp"
#include "base/text.hpp"
#include "heads/http/routes.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <fmt/format.h>

namespace hub::http::detail {
namespace {

namespace bj = boost::json;

response fail(const route_context& c, const error& e) { return error_response(e, c.svc.clk); }
response fail(const route_context& c, errc code, std::string message) {
  return error_of(code, std::move(message), c.svc.clk);
}

// The resource id names the hub the way ARM does; hubd's hub name is its host name.
std::string_view hub_name(const route_context& c) { return c.svc.auth.identity().host_name; }

response description(const route_context& c, int status, const certificates::ca_certificate& cert) {
  return json_response(status, certificates::to_json(cert, hub_name(c)), cert.etag);
}

// "certificate" as a string: absent is ArgumentNull, another type ArgumentInvalid.
result<std::string> certificate_field(const bj::object& o) {
  const auto* v = o.if_contains("certificate");
  if (v == nullptr || v->is_null()) return make_error(errc::argument_null, "The body has no certificate");
  if (!v->is_string()) return make_error(errc::argument_invalid, "certificate must be a string (PEM or base64 DER)");
  return std::string(v->get_string());
}

response list_certificates(const route_context& c) {
  auto all = c.svc.certificates.list();
  if (!all) return fail(c, all.error());
  bj::array value;
  value.reserve(all->size());
  for (const auto& cert : *all) value.emplace_back(certificates::to_json(cert, hub_name(c)));
  return json_response(200, bj::object{{"value", std::move(value)}});
}

response get_certificate(const route_context& c) {
  auto cert = c.svc.certificates.get(c.name);
  if (!cert) return fail(c, cert.error());
  return description(c, 200, *cert);
}

// Body: CertificateDescription {"properties":{"certificate":..., "isVerified":...}}, or the
// flat {"certificate":..., "isVerified":...} of api-version 2017-07-01 (CertificateBodyDescription).
// isVerified true is IoT Hub's "set certificate status to verified on upload".
response put_certificate(const route_context& c) {
  auto body = body_object(c.req);
  if (!body) return fail(c, body.error());
  const bj::object* fields = &*body;
  if (const auto* props = body->if_contains("properties"); props != nullptr && !props->is_null()) {
    if (!props->is_object()) return fail(c, errc::argument_invalid, "properties must be an object");
    fields = &props->get_object();
  }
  auto text = certificate_field(*fields);
  if (!text) return fail(c, text.error());
  bool verified = false;
  if (const auto* v = fields->if_contains("isVerified"); v != nullptr && !v->is_null()) {
    if (!v->is_bool()) return fail(c, errc::argument_invalid, "isVerified must be true or false");
    verified = v->get_bool();
  }
  bool created = false;
  auto saved = c.svc.certificates.put(c.name, *text, verified, if_match_of(c.req), &created);
  if (!saved) return fail(c, saved.error());
  // ARM's createOrUpdate: 201 for a new certificate, 200 for a replaced one.
  return description(c, created ? 201 : 200, *saved);
}

response delete_certificate(const route_context& c) {
  auto done = c.svc.certificates.remove(c.name, if_match_of(c.req));
  if (!done) return fail(c, done.error());
  return no_content();
}

response generate_verification_code(const route_context& c) {
  auto cert = c.svc.certificates.generate_verification_code(c.name, if_match_of(c.req));
  if (!cert) return fail(c, cert.error());
  return json_response(200, certificates::to_json_with_nonce(*cert, hub_name(c)), cert->etag);
}

// Body: CertificateVerificationDescription {"certificate":"<PEM or base64 DER>"}.
response verify_certificate(const route_context& c) {
  auto body = body_object(c.req);
  if (!body) return fail(c, body.error());
  auto proof = certificate_field(*body);
  if (!proof) return fail(c, proof.error());
  auto cert = c.svc.certificates.verify(c.name, *proof, if_match_of(c.req));
  if (!cert) return fail(c, cert.error());
  return description(c, 200, *cert);
}

using p = auth::permission;

constexpr route table[] = {
    {"GET", "certificates", p::registry_read, list_certificates},
    {"GET", "certificates/{name}", p::registry_read, get_certificate},
    {"PUT", "certificates/{name}", p::registry_write, put_certificate},
    {"DELETE", "certificates/{name}", p::registry_write, delete_certificate},
    {"POST", "certificates/{name}/generateVerificationCode", p::registry_write, generate_verification_code},
    {"POST", "certificates/{name}/verify", p::registry_write, verify_certificate},
};

}  // namespace

std::span<const route> certificate_routes() { return table; }

}  // namespace hub::http::detail
