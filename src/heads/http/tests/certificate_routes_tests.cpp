// The certificates REST API through the router: IoT Hub's ARM shapes for CertificateDescription
// and CertificateWithNonceDescription, If-Match rules, proof of possession, permissions. Real
// services over a memory kv and a manual clock; certificates made with OpenSSL.
#include "base/text.hpp"
#include "domain/auth/policies.hpp"
#include "domain/auth/sas.hpp"
#include "domain/auth/service.hpp"
#include "domain/certificates/service.hpp"
#include "domain/certificates/tests/make_cert.hpp"
#include "domain/registry/service.hpp"
#include "heads/http/router.hpp"
#include "storage/kv.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace hub::http {
namespace {

namespace bj = boost::json;
using certificates::testing::issued;
using certificates::testing::make_cert;

constexpr const char* host = "127.0.0.9";
constexpr const char* api = "?api-version=2021-04-12";

std::optional<std::string> header_of(const response& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (text::iequals(k, name)) return v;
  }
  return std::nullopt;
}

bj::value body_of(const response& r) { return bj::parse(r.body); }

void expect_error(const response& r, int status, std::string_view name, std::string_view text = {}) {
  EXPECT_EQ(r.status, status) << r.body;
  EXPECT_EQ(header_of(r, "iothub-errorcode").value_or(""), name) << r.body;
  if (!text.empty()) {
    EXPECT_NE(r.body.find(text), std::string::npos) << r.body;
  }
}

std::string upload_body(std::string_view pem, bool verified = false) {
  return bj::serialize(bj::object{{"properties", bj::object{{"certificate", pem}, {"isVerified", verified}}}});
}

std::string proof_body(std::string_view pem) { return bj::serialize(bj::object{{"certificate", pem}}); }

class certificate_routes : public ::testing::Test {
 protected:
  manual_clock clk;
  std::unique_ptr<storage::kv> kv = storage::make_memory_kv();
  registry::service reg{*kv, clk};
  auth::service auth{auth::hub_identity{host, auth::default_policies()}, reg, clk};
  certificates::service certs{*kv, reg, clk};
  router rt{services{reg, auth, clk, certs}};
  issued root = make_cert({.cn = "Contoso Root", .ca = true}, clk.now());

  std::string token(std::string_view policy) const {
    const auto* p = auth.identity().find(policy);
    return auth::make_sas_token(host, p != nullptr ? p->primary_key : "", clk.now_seconds() + 3600, policy);
  }

  response call(std::string method, std::string path, std::string body = {},
                std::optional<std::string> if_match = std::nullopt, std::string_view policy = "iothubowner") {
    request req;
    req.method = std::move(method);
    req.target = path + api;
    req.headers.emplace_back("Authorization", token(policy));
    if (!body.empty()) req.headers.emplace_back("Content-Type", "application/json");
    if (if_match) req.headers.emplace_back("If-Match", *if_match);
    req.body = std::move(body);
    return rt.route(req);
  }

  std::string etag_of(const response& r) { return std::string(body_of(r).at("etag").as_string()); }
};

TEST_F(certificate_routes, upload_get_and_list) {
  const auto put = call("PUT", "/certificates/contoso-root", upload_body(root.pem()));
  ASSERT_EQ(put.status, 201) << put.body;
  EXPECT_EQ(header_of(put, "Content-Type").value_or(""), "application/json; charset=utf-8");
  const auto j = body_of(put).as_object();
  EXPECT_EQ(j.at("name").as_string(), "contoso-root");
  EXPECT_EQ(j.at("type").as_string(), "Microsoft.Devices/IotHubs/Certificates");
  EXPECT_TRUE(std::string_view(j.at("id").as_string()).ends_with("/IotHubs/127.0.0.9/certificates/contoso-root"));
  EXPECT_EQ(header_of(put, "ETag").value_or(""), fmt::format("\"{}\"", j.at("etag").as_string()));
  const auto& p = j.at("properties").as_object();
  EXPECT_EQ(p.at("subject").as_string(), "CN=Contoso Root, O=hubd tests");
  EXPECT_EQ(p.at("thumbprint").as_string().size(), 40u);
  EXPECT_EQ(p.at("isVerified").as_bool(), false);
  EXPECT_EQ(p.at("certificate").as_string(), root.pem());
  EXPECT_TRUE(std::string_view(p.at("expiry").as_string()).ends_with(" GMT"));
  EXPECT_EQ(p.at("created").as_string(), certificates::to_rfc1123(clk.now()));
  EXPECT_FALSE(p.contains("verificationCode"));

  const auto get = call("GET", "/certificates/contoso-root", {}, std::nullopt, "registryRead");
  ASSERT_EQ(get.status, 200) << get.body;
  EXPECT_EQ(body_of(get), body_of(put));

  // The flat body of api-version 2017-07-01 is accepted too.
  const auto flat = call("PUT", "/certificates/second", proof_body(root.pem()));
  ASSERT_EQ(flat.status, 201) << flat.body;

  const auto list = call("GET", "/certificates", {}, std::nullopt, "registryRead");
  ASSERT_EQ(list.status, 200) << list.body;
  const bj::value listed = body_of(list);
  const auto& value = listed.at("value").as_array();
  ASSERT_EQ(value.size(), 2u);
  EXPECT_EQ(value[0].at("name").as_string(), "contoso-root");
  EXPECT_EQ(value[1].at("name").as_string(), "second");

  const auto empty = call("GET", "/certificates/");  // trailing slash, as SDKs write list paths
  EXPECT_EQ(empty.status, 200);
}

TEST_F(certificate_routes, upload_verified_at_once) {
  const auto put = call("PUT", "/certificates/root", upload_body(root.pem(), true));
  ASSERT_EQ(put.status, 201) << put.body;
  EXPECT_EQ(body_of(put).at("properties").at("isVerified").as_bool(), true);
}

TEST_F(certificate_routes, upload_errors) {
  expect_error(call("PUT", "/certificates/root", "{not json"), 400, "IotHubFormatError");
  expect_error(call("PUT", "/certificates/root", R"({"properties":{}})"), 400, "ArgumentNull");
  expect_error(call("PUT", "/certificates/root", R"({"properties":{"certificate":42}})"), 400, "ArgumentInvalid");
  expect_error(call("PUT", "/certificates/root", R"({"properties":"x"})"), 400, "ArgumentInvalid");
  const bj::object bad_flag{{"certificate", root.pem()}, {"isVerified", "yes"}};
  expect_error(call("PUT", "/certificates/root", bj::serialize(bj::object{{"properties", bad_flag}})), 400,
               "ArgumentInvalid", "isVerified");
  expect_error(call("PUT", "/certificates/root", upload_body("garbage!")), 400, "ArgumentInvalid", "neither PEM");
  const issued leaf = make_cert({.cn = "dev-1"}, clk.now(), &root);
  expect_error(call("PUT", "/certificates/root", upload_body(leaf.pem())), 400, "ArgumentInvalid", "CA:TRUE");
  expect_error(call("PUT", "/certificates/has%20space", upload_body(root.pem())), 400, "ArgumentInvalid",
               "is invalid");
  expect_error(call("PUT", "/certificates/root", upload_body(root.pem() + root.key_pem())), 400, "ArgumentInvalid",
               "private key");

  ASSERT_EQ(call("PUT", "/certificates/root", upload_body(root.pem())).status, 201);
  expect_error(call("PUT", "/certificates/root", upload_body(root.pem())), 412, "PreconditionFailed", "If-Match");
  expect_error(call("PUT", "/certificates/root", upload_body(root.pem()), "\"AAAAAAAAAAA=\""), 412,
               "PreconditionFailed");
  const auto etag = etag_of(call("GET", "/certificates/root"));
  const auto replaced = call("PUT", "/certificates/root", upload_body(root.pem(), true), fmt::format("\"{}\"", etag));
  ASSERT_EQ(replaced.status, 200) << replaced.body;
  EXPECT_NE(etag_of(replaced), etag);
}

TEST_F(certificate_routes, proof_of_possession_flow) {
  const auto put = call("PUT", "/certificates/root", upload_body(root.pem()));
  ASSERT_EQ(put.status, 201);
  expect_error(call("POST", "/certificates/root/generateVerificationCode"), 400, "ArgumentNull", "If-Match");

  const auto code =
      call("POST", "/certificates/root/generateVerificationCode", {}, fmt::format("\"{}\"", etag_of(put)));
  ASSERT_EQ(code.status, 200) << code.body;
  const auto cj = body_of(code);
  const std::string nonce(cj.at("properties").at("verificationCode").as_string());
  EXPECT_EQ(nonce.size(), 48u);
  EXPECT_EQ(cj.at("properties").at("isVerified").as_bool(), false);
  EXPECT_EQ(cj.at("name").as_string(), "root");
  const std::string etag = etag_of(code);
  EXPECT_NE(etag, etag_of(put));

  const issued wrong = make_cert({.cn = "not-the-code"}, clk.now(), &root);
  expect_error(call("POST", "/certificates/root/verify", proof_body(wrong.pem()), fmt::format("\"{}\"", etag)), 400,
               "ArgumentInvalid", "Proof-Of-Possession failed.");
  const issued other_ca = make_cert({.cn = "Other", .ca = true}, clk.now());
  const issued forged = make_cert({.cn = nonce}, clk.now(), &other_ca);
  expect_error(call("POST", "/certificates/root/verify", proof_body(forged.pem()), fmt::format("\"{}\"", etag)), 400,
               "ArgumentInvalid", "cannot be found in the certificate chain");
  expect_error(call("POST", "/certificates/root/verify", R"({})", fmt::format("\"{}\"", etag)), 400, "ArgumentNull");

  const issued proof = make_cert({.cn = nonce}, clk.now(), &root);
  const auto verified = call("POST", "/certificates/root/verify", proof_body(proof.pem()), fmt::format("\"{}\"", etag));
  ASSERT_EQ(verified.status, 200) << verified.body;
  EXPECT_EQ(body_of(verified).at("properties").at("isVerified").as_bool(), true);
  EXPECT_FALSE(body_of(verified).at("properties").as_object().contains("verificationCode"));
  EXPECT_EQ(body_of(call("GET", "/certificates/root")).at("properties").at("isVerified").as_bool(), true);
}

TEST_F(certificate_routes, delete_needs_if_match) {
  const auto put = call("PUT", "/certificates/root", upload_body(root.pem()));
  ASSERT_EQ(put.status, 201);
  expect_error(call("DELETE", "/certificates/root"), 400, "ArgumentNull");
  expect_error(call("DELETE", "/certificates/root", {}, "\"AAAAAAAAAAA=\""), 412, "PreconditionFailed");
  EXPECT_EQ(call("DELETE", "/certificates/root", {}, fmt::format("\"{}\"", etag_of(put))).status, 204);
  expect_error(call("GET", "/certificates/root"), 404, "NotFound", "Certificate 'root' not found");
  // As IoT Hub's API: deleting a certificate that does not exist does nothing.
  EXPECT_EQ(call("DELETE", "/certificates/root", {}, "*").status, 204);
}

TEST_F(certificate_routes, permissions_and_unknown_paths) {
  // registryRead reads but cannot write; service (ServiceConnect only) cannot even read.
  EXPECT_EQ(call("GET", "/certificates", {}, std::nullopt, "registryRead").status, 200);
  expect_error(call("PUT", "/certificates/root", upload_body(root.pem()), std::nullopt, "registryRead"), 401,
               "IotHubUnauthorizedAccess");
  expect_error(call("GET", "/certificates", {}, std::nullopt, "service"), 401, "IotHubUnauthorizedAccess");
  expect_error(call("GET", "/certificates", {}, std::nullopt, "device"), 401, "IotHubUnauthorizedAccess");
  EXPECT_EQ(call("PUT", "/certificates/root", upload_body(root.pem()), std::nullopt, "registryReadWrite").status, 201);

  expect_error(call("POST", "/certificates/root/unknown"), 404, "NotFound");
  const auto wrong_verb = call("GET", "/certificates/root/verify");
  expect_error(wrong_verb, 405, "MethodNotAllowed");
  EXPECT_EQ(header_of(wrong_verb, "Allow").value_or(""), "POST");
  // Fixed words are case-insensitive, as for the registry routes.
  EXPECT_EQ(call("GET", "/Certificates/root").status, 200);
}

}  // namespace
}  // namespace hub::http
