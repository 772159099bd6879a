// Unit tests for domain/certificates: parsing and the REST shape (model), the CA registry with
// proof of possession (service, on memory_kv with a manual clock), and device authentication by
// thumbprint and by CA chain. Every certificate is made here with OpenSSL's APIs.
#include "base/crypto.hpp"
#include "domain/certificates/device_auth.hpp"
#include "domain/certificates/tests/make_cert.hpp"
#include "domain/certificates/model.hpp"
#include "domain/certificates/service.hpp"
#include "domain/registry/service.hpp"
#include "storage/kv.hpp"

#include <boost/json/value.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

namespace hub::certificates {
namespace {

using namespace std::chrono_literals;
using namespace hub::certificates::testing;

// ---- fixtures ------------------------------------------------------------------------------

class certificates_test : public ::testing::Test {
 protected:
  manual_clock clk;
  std::unique_ptr<storage::kv> kv = storage::make_memory_kv();
  registry::service reg{*kv, clk};
  service certs{*kv, reg, clk};

  issued root = make_cert({.cn = "hubd test root", .ca = true}, clk.now());

  // Uploads, generates a code and proves possession with `owner`'s key.
  ca_certificate upload_verified(std::string_view name, const issued& owner) {
    auto c = certs.put(name, owner.pem(), false, std::nullopt);
    EXPECT_TRUE(c) << c.error().message;
    auto code = certs.generate_verification_code(name, c->etag);
    EXPECT_TRUE(code) << code.error().message;
    const issued proof = make_cert({.cn = code->verification_code}, clk.now(), &owner);
    auto done = certs.verify(name, proof.pem(), code->etag);
    EXPECT_TRUE(done) << done.error().message;
    return *done;
  }

  void add_device(std::string id, registry::auth_type type, std::string primary = {}, std::string secondary = {}) {
    registry::device d;
    d.device_id = std::move(id);
    d.auth.type = type;
    d.auth.primary_thumbprint = std::move(primary);
    d.auth.secondary_thumbprint = std::move(secondary);
    auto created = reg.create_device(std::move(d));
    ASSERT_TRUE(created) << created.error().message;
  }
};

// ---- model ---------------------------------------------------------------------------------

TEST(certificates_model, names_follow_iot_hub_rule) {
  EXPECT_TRUE(valid_name("root"));
  EXPECT_TRUE(valid_name("Contoso-Root_CA.2024"));
  EXPECT_TRUE(valid_name(std::string(64, 'a')));
  EXPECT_FALSE(valid_name(""));
  EXPECT_FALSE(valid_name(std::string(65, 'a')));
  EXPECT_FALSE(valid_name("has space"));
  EXPECT_FALSE(valid_name("slash/name"));
  EXPECT_FALSE(valid_name("plus+"));
}

TEST(certificates_model, parses_pem_and_base64_der) {
  const sys_time now = manual_clock{}.now();
  const issued ca = make_cert({.cn = "Contoso Root", .ca = true}, now);
  auto from_pem = parse_certificate(ca.pem());
  ASSERT_TRUE(from_pem) << from_pem.error().message;
  EXPECT_TRUE(from_pem->is_ca);
  EXPECT_EQ(from_pem->subject, "CN=Contoso Root, O=hubd tests");
  EXPECT_EQ(from_pem->common_name, "Contoso Root");
  EXPECT_EQ(from_pem->der, ca.der());
  EXPECT_EQ(from_pem->sha1_thumbprint, crypto::sha1_hex(ca.der()));
  EXPECT_EQ(from_pem->sha1_thumbprint.size(), 40u);
  EXPECT_EQ(from_pem->sha256_thumbprint, crypto::sha256_hex(ca.der()));
  EXPECT_EQ(from_pem->not_after, std::chrono::floor<std::chrono::seconds>(now + 24h * 365));

  // A .cer file's bytes in base64, wrapped at 64 columns as tools write it.
  std::string b64 = crypto::base64_encode(ca.der());
  for (std::size_t at = 64; at < b64.size(); at += 66) b64.insert(at, "\r\n");
  auto from_der = parse_certificate(b64);
  ASSERT_TRUE(from_der) << from_der.error().message;
  EXPECT_EQ(from_der->der, ca.der());

  // PEM after `openssl x509 -text` output.
  auto with_text = parse_certificate("Certificate:\n    Data: ...\n" + ca.pem());
  ASSERT_TRUE(with_text) << with_text.error().message;

  const issued leaf = make_cert({.cn = "dev-1"}, now, &ca);
  auto parsed_leaf = parse_certificate(leaf.pem());
  ASSERT_TRUE(parsed_leaf);
  EXPECT_FALSE(parsed_leaf->is_ca);
  EXPECT_FALSE(parse_certificate(ca.pem()).value().pem.empty());
}

TEST(certificates_model, refuses_what_is_not_one_certificate) {
  const sys_time now = manual_clock{}.now();
  const issued ca = make_cert({.cn = "Root", .ca = true}, now);
  const auto message = [](std::string_view text) {
    auto r = parse_certificate(text);
    EXPECT_FALSE(r);
    return r ? std::string() : r.error().message;
  };
  EXPECT_NE(message(ca.pem() + ca.key_pem()).find("private key"), std::string::npos);
  EXPECT_NE(message(ca.pem() + ca.pem()).find("2 certificates"), std::string::npos);
  EXPECT_NE(message("<not a certificate>").find("neither PEM"), std::string::npos);
  EXPECT_NE(message(crypto::base64_encode(std::string("garbage bytes"))).find("DER"), std::string::npos);
  EXPECT_NE(message("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").find("cannot be parsed"),
            std::string::npos);
  EXPECT_NE(message(std::string(70 * 1024, 'A')).find("KiB"), std::string::npos);
  EXPECT_EQ(parse_certificate("  \n").error().code, errc::argument_null);
  EXPECT_EQ(parse_certificate("x").error().code, errc::argument_invalid);
  // Trailing bytes after the DER would give one certificate two thumbprints.
  EXPECT_FALSE(parse_certificate(crypto::base64_encode(ca.der() + "x")));
}

TEST(certificates_model, rfc1123_dates) {
  const sys_time t = std::chrono::sys_days{std::chrono::year{2039} / 12 / 31} + 23h + 59min + 59s + 500ms;
  EXPECT_EQ(to_rfc1123(t), "Sat, 31 Dec 2039 23:59:59 GMT");
  EXPECT_EQ(to_rfc1123(std::chrono::sys_days{std::chrono::year{2017} / 10 / 12} + 19h + 23min + 50s),
            "Thu, 12 Oct 2017 19:23:50 GMT");
}

TEST(certificates_model, json_shape_and_storage_round_trip) {
  ca_certificate c;
  c.name = "root";
  c.pem = "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n";
  c.subject = "CN=Root";
  c.thumbprint = "97388663832D0393C9246CAB4FBA2C8677185A25";
  c.expiry = std::chrono::sys_days{std::chrono::year{2039} / 12 / 31};
  c.created = std::chrono::sys_days{std::chrono::year{2017} / 10 / 12} + 123456789ns;
  c.updated = c.created + 1s;
  c.etag = "AAAAAAExpNs=";
  c.verification_code = "ABC";

  const auto j = to_json(c, "myhub");
  EXPECT_EQ(j.at("name").as_string(), "root");
  EXPECT_EQ(j.at("etag").as_string(), "AAAAAAExpNs=");
  EXPECT_EQ(j.at("type").as_string(), "Microsoft.Devices/IotHubs/Certificates");
  EXPECT_EQ(j.at("id").as_string(),
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/hubd/providers/Microsoft.Devices/"
            "IotHubs/myhub/certificates/root");
  const auto& p = j.at("properties").as_object();
  EXPECT_EQ(p.at("subject").as_string(), "CN=Root");
  EXPECT_EQ(p.at("expiry").as_string(), "Sat, 31 Dec 2039 00:00:00 GMT");
  EXPECT_EQ(p.at("thumbprint").as_string(), c.thumbprint);
  EXPECT_EQ(p.at("isVerified").as_bool(), false);
  EXPECT_EQ(p.at("created").as_string(), "Thu, 12 Oct 2017 00:00:00 GMT");
  EXPECT_EQ(p.at("updated").as_string(), "Thu, 12 Oct 2017 00:00:01 GMT");
  EXPECT_EQ(p.at("certificate").as_string(), c.pem);
  EXPECT_FALSE(p.contains("verificationCode")) << "the nonce only comes from generateVerificationCode";
  EXPECT_EQ(to_json_with_nonce(c, "myhub").at("properties").at("verificationCode").as_string(), "ABC");

  auto back = decode(encode(c));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->name, c.name);
  EXPECT_EQ(back->pem, c.pem);
  EXPECT_EQ(back->created, c.created);
  EXPECT_EQ(back->expiry, c.expiry);
  EXPECT_EQ(back->verification_code, "ABC");
  EXPECT_EQ(back->etag, c.etag);
  EXPECT_FALSE(decode("{}"));
  EXPECT_FALSE(decode("not json"));
}

// ---- the CA registry -------------------------------------------------------------------------

TEST_F(certificates_test, upload_describes_the_certificate) {
  bool created = false;
  auto c = certs.put("root", root.pem(), false, std::nullopt, &created);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_TRUE(created);
  EXPECT_EQ(c->name, "root");
  EXPECT_EQ(c->subject, "CN=hubd test root, O=hubd tests");
  EXPECT_EQ(c->thumbprint, crypto::sha1_hex(root.der()));
  EXPECT_FALSE(c->is_verified);
  EXPECT_EQ(c->created, clk.now());
  EXPECT_EQ(c->updated, clk.now());
  EXPECT_EQ(c->etag.size(), 12u) << c->etag;
  EXPECT_TRUE(c->verification_code.empty());

  auto got = certs.get("root");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->etag, c->etag);
  EXPECT_EQ(got->pem, root.pem());
}

TEST_F(certificates_test, upload_accepts_base64_der_and_verified_flag) {
  auto c = certs.put("root", crypto::base64_encode(root.der()), true, std::nullopt);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_TRUE(c->is_verified);
  EXPECT_EQ(c->pem, root.pem());
}

TEST_F(certificates_test, upload_refuses_bad_input) {
  const issued leaf = make_cert({.cn = "dev-1"}, clk.now(), &root);
  auto not_ca = certs.put("leaf", leaf.pem(), false, std::nullopt);
  ASSERT_FALSE(not_ca);
  EXPECT_EQ(not_ca.error().code, errc::argument_invalid);
  EXPECT_NE(not_ca.error().message.find("CA:TRUE"), std::string::npos);

  const issued old = make_cert({.cn = "old", .ca = true, .not_before = -48h, .not_after = -24h}, clk.now());
  auto expired = certs.put("old", old.pem(), false, std::nullopt);
  ASSERT_FALSE(expired);
  EXPECT_NE(expired.error().message.find("expired"), std::string::npos);

  EXPECT_EQ(certs.put("bad name", root.pem(), false, std::nullopt).error().code, errc::argument_invalid);
  EXPECT_EQ(certs.put("root", "junk", false, std::nullopt).error().code, errc::argument_invalid);
  auto list = certs.list();
  ASSERT_TRUE(list);
  EXPECT_TRUE(list->empty());
}

TEST_F(certificates_test, replace_needs_the_etag_and_resets_verification) {
  const ca_certificate verified = upload_verified("root", root);
  ASSERT_TRUE(verified.is_verified);

  auto no_etag = certs.put("root", root.pem(), false, std::nullopt);
  ASSERT_FALSE(no_etag);
  EXPECT_EQ(no_etag.error().code, errc::precondition_failed);
  EXPECT_EQ(certs.put("root", root.pem(), false, std::string("AAAAAAAAAAA=")).error().code, errc::precondition_failed);

  clk.advance(5s);
  const issued other = make_cert({.cn = "other root", .ca = true}, clk.now());
  bool created = true;
  auto replaced = certs.put("root", other.pem(), false, verified.etag, &created);
  ASSERT_TRUE(replaced) << replaced.error().message;
  EXPECT_FALSE(created);
  EXPECT_FALSE(replaced->is_verified) << "a new certificate needs a new proof";
  EXPECT_EQ(replaced->created, verified.created);
  EXPECT_EQ(replaced->updated, clk.now());
  EXPECT_NE(replaced->etag, verified.etag);
  EXPECT_EQ(replaced->subject, "CN=other root, O=hubd tests");

  auto star = certs.put("root", root.pem(), true, std::string("*"));
  ASSERT_TRUE(star) << star.error().message;
  EXPECT_TRUE(star->is_verified);
  // If-Match naming a version of a certificate that does not exist.
  EXPECT_EQ(certs.put("absent", root.pem(), false, std::string("AAAAAAAAAAA=")).error().code, errc::not_found);
}

TEST_F(certificates_test, holds_at_most_25) {
  for (std::size_t i = 0; i < max_certificates; ++i) {
    auto c = certs.put("ca" + std::to_string(i), root.pem(), false, std::nullopt);
    ASSERT_TRUE(c) << c.error().message;
  }
  auto one_more = certs.put("ca-extra", root.pem(), false, std::nullopt);
  ASSERT_FALSE(one_more);
  EXPECT_EQ(one_more.error().code, errc::quota_exceeded);
  // Replacing one of them is not a new one.
  EXPECT_TRUE(certs.put("ca3", root.pem(), true, std::string("*")));
  auto list = certs.list();
  ASSERT_TRUE(list);
  EXPECT_EQ(list->size(), max_certificates);
}

TEST_F(certificates_test, list_get_and_delete) {
  ASSERT_TRUE(certs.put("b-root", root.pem(), false, std::nullopt));
  auto a = certs.put("a-root", root.pem(), true, std::nullopt);
  ASSERT_TRUE(a);
  auto list = certs.list();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "a-root");
  EXPECT_EQ((*list)[1].name, "b-root");

  EXPECT_EQ(certs.get("nope").error().code, errc::not_found);
  EXPECT_EQ(certs.get("bad/name").error().code, errc::argument_invalid);
  EXPECT_EQ(certs.remove("a-root", std::nullopt).error().code, errc::argument_null);
  EXPECT_EQ(certs.remove("a-root", std::string("AAAAAAAAAAA=")).error().code, errc::precondition_failed);
  EXPECT_TRUE(certs.remove("nope", std::string("*"))) << "deleting nothing does nothing";
  ASSERT_TRUE(certs.remove("a-root", a->etag));
  EXPECT_EQ(certs.get("a-root").error().code, errc::not_found);
  ASSERT_TRUE(certs.remove("b-root", std::string("*")));
  EXPECT_TRUE(certs.list()->empty());
}

TEST_F(certificates_test, verification_code_is_fresh_each_time_and_moves_the_etag) {
  auto c = certs.put("root", root.pem(), false, std::nullopt);
  ASSERT_TRUE(c);
  EXPECT_EQ(certs.generate_verification_code("root", std::nullopt).error().code, errc::argument_null);
  EXPECT_EQ(certs.generate_verification_code("root", std::string("AAAAAAAAAAA=")).error().code,
            errc::precondition_failed);
  EXPECT_EQ(certs.generate_verification_code("nope", std::string("*")).error().code, errc::not_found);

  auto first = certs.generate_verification_code("root", c->etag);
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(first->verification_code.size(), 48u);
  EXPECT_EQ(first->verification_code.find_first_not_of("0123456789ABCDEF"), std::string::npos);
  EXPECT_NE(first->etag, c->etag);
  EXPECT_EQ(certs.generate_verification_code("root", c->etag).error().code, errc::precondition_failed)
      << "the old etag is stale";
  auto second = certs.generate_verification_code("root", first->etag);
  ASSERT_TRUE(second);
  EXPECT_NE(second->verification_code, first->verification_code);
  EXPECT_FALSE(second->is_verified);
}

TEST_F(certificates_test, proof_of_possession_with_the_right_key_and_code) {
  auto c = certs.put("root", root.pem(), false, std::nullopt);
  ASSERT_TRUE(c);
  auto code = certs.generate_verification_code("root", c->etag);
  ASSERT_TRUE(code);
  clk.advance(1min);
  const issued proof = make_cert({.cn = code->verification_code}, clk.now(), &root);
  auto done = certs.verify("root", proof.pem(), code->etag);
  ASSERT_TRUE(done) << done.error().message;
  EXPECT_TRUE(done->is_verified);
  EXPECT_TRUE(done->verification_code.empty()) << "a code proves once";
  EXPECT_EQ(done->updated, clk.now());
  EXPECT_NE(done->etag, code->etag);
  EXPECT_TRUE(certs.get("root")->is_verified);

  // The same proof again: the code is spent.
  auto again = certs.verify("root", proof.pem(), done->etag);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message.find("no verification code"), std::string::npos);
}

TEST_F(certificates_test, proof_for_an_intermediate_and_as_base64_der) {
  const issued inter = make_cert({.cn = "hubd test intermediate", .ca = true}, clk.now(), &root);
  auto c = certs.put("inter", inter.pem(), false, std::nullopt);
  ASSERT_TRUE(c);
  auto code = certs.generate_verification_code("inter", c->etag);
  ASSERT_TRUE(code);
  const issued proof = make_cert({.cn = code->verification_code}, clk.now(), &inter);
  auto done = certs.verify("inter", crypto::base64_encode(proof.der()), std::string("*"));
  ASSERT_TRUE(done) << done.error().message;
  EXPECT_TRUE(done->is_verified);
}

TEST_F(certificates_test, proof_with_the_wrong_code_or_signer_fails) {
  auto c = certs.put("root", root.pem(), false, std::nullopt);
  ASSERT_TRUE(c);
  auto code = certs.generate_verification_code("root", c->etag);
  ASSERT_TRUE(code);

  const issued wrong_cn = make_cert({.cn = "not-the-code"}, clk.now(), &root);
  auto r1 = certs.verify("root", wrong_cn.pem(), code->etag);
  ASSERT_FALSE(r1);
  EXPECT_EQ(r1.error().code, errc::argument_invalid);
  EXPECT_TRUE(r1.error().message.starts_with("Proof-Of-Possession failed.")) << r1.error().message;
  EXPECT_NE(r1.error().message.find(code->verification_code), std::string::npos);

  // Someone else's CA, even under the same subject name, cannot prove possession.
  const issued impostor = make_cert({.cn = "hubd test root", .ca = true}, clk.now());
  const issued forged = make_cert({.cn = code->verification_code}, clk.now(), &impostor);
  auto r2 = certs.verify("root", forged.pem(), code->etag);
  ASSERT_FALSE(r2);
  EXPECT_NE(r2.error().message.find("Issuer certificate 'CN=hubd test root, O=hubd tests' cannot be found"),
            std::string::npos)
      << r2.error().message;

  // A self-signed certificate carrying the code proves nothing.
  const issued self = make_cert({.cn = code->verification_code}, clk.now());
  EXPECT_FALSE(certs.verify("root", self.pem(), code->etag));

  const issued stale =
      make_cert({.cn = code->verification_code, .not_before = -48h, .not_after = -24h}, clk.now(), &root);
  auto r3 = certs.verify("root", stale.pem(), code->etag);
  ASSERT_FALSE(r3);
  EXPECT_NE(r3.error().message.find("valid only"), std::string::npos);

  EXPECT_EQ(certs.verify("root", "junk", code->etag).error().code, errc::argument_invalid);
  EXPECT_EQ(certs.verify("root", wrong_cn.pem(), std::nullopt).error().code, errc::argument_null);
  EXPECT_FALSE(certs.get("root")->is_verified);
  // The failures left the code usable.
  const issued good = make_cert({.cn = code->verification_code}, clk.now(), &root);
  EXPECT_TRUE(certs.verify("root", good.pem(), code->etag));
}

TEST_F(certificates_test, proof_without_extensions_like_openssl_x509_req) {
  auto c = certs.put("root", root.pem(), false, std::nullopt);
  auto code = certs.generate_verification_code("root", c->etag);
  ASSERT_TRUE(code);
  const issued proof = make_cert({.cn = code->verification_code, .v1 = true}, clk.now(), &root);
  auto done = certs.verify("root", proof.pem(), code->etag);
  EXPECT_TRUE(done) << done.error().message;
}

TEST_F(certificates_test, trust_anchors_are_the_verified_ones) {
  const issued other = make_cert({.cn = "unverified root", .ca = true}, clk.now());
  ASSERT_TRUE(certs.put("pending", other.pem(), false, std::nullopt));
  upload_verified("root", root);
  auto anchors = certs.trust_anchors();
  ASSERT_TRUE(anchors);
  ASSERT_EQ(anchors->size(), 1u);
  EXPECT_EQ((*anchors)[0].name, "root");
  EXPECT_EQ((*anchors)[0].der, root.der());
}

// ---- device authentication ----------------------------------------------------------------

registry::authentication thumbprints(std::string primary, std::string secondary = {}) {
  registry::authentication a;
  a.type = registry::auth_type::self_signed;
  a.primary_thumbprint = std::move(primary);
  a.secondary_thumbprint = std::move(secondary);
  return a;
}

registry::authentication ca_auth() {
  registry::authentication a;
  a.type = registry::auth_type::certificate_authority;
  return a;
}

std::string reason_of(const result<device_certificate>& r) { return r ? std::string("(accepted)") : r.error().message; }

TEST(device_auth, self_signed_thumbprints) {
  const sys_time now = manual_clock{}.now();
  const issued dev = make_cert({.cn = "dev-1"}, now);
  const client_chain chain{dev.der(), {}};
  const std::string sha1 = crypto::sha1_hex(dev.der());
  const std::string sha256 = crypto::sha256_hex(dev.der());

  auto by_sha1 = check_device_certificate(chain, thumbprints(sha1), "dev-1", {}, {}, now);
  ASSERT_TRUE(by_sha1) << reason_of(by_sha1);
  EXPECT_EQ(by_sha1->method, registry::auth_type::self_signed);
  EXPECT_EQ(by_sha1->sha1_thumbprint, sha1);
  EXPECT_EQ(by_sha1->sha256_thumbprint, sha256);
  EXPECT_EQ(by_sha1->subject, "CN=dev-1, O=hubd tests");
  EXPECT_EQ(by_sha1->not_after, std::chrono::floor<std::chrono::seconds>(now + 24h * 365));

  EXPECT_TRUE(check_device_certificate(chain, thumbprints("0000000000000000000000000000000000000000", sha256), "dev-1",
                                       {}, {}, now))
      << "the secondary thumbprint, SHA-256";
  std::string lower = sha1;
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  EXPECT_TRUE(check_device_certificate(chain, thumbprints(lower), "dev-1", {}, {}, now));
  // The CN does not matter for a thumbprint identity.
  EXPECT_TRUE(check_device_certificate(chain, thumbprints(sha1), "another-id", {}, {}, now));

  const issued other = make_cert({.cn = "dev-1"}, now);
  auto mismatch = check_device_certificate({other.der(), {}}, thumbprints(sha1, sha256), "dev-1", {}, {}, now);
  ASSERT_FALSE(mismatch);
  EXPECT_EQ(mismatch.error().code, errc::unauthorized);
  EXPECT_NE(mismatch.error().message.find("SHA1=" + crypto::sha1_hex(other.der())), std::string::npos)
      << mismatch.error().message;
}

TEST(device_auth, self_signed_validity_period) {
  const sys_time now = manual_clock{}.now();
  const issued expired = make_cert({.cn = "dev-1", .not_before = -48h, .not_after = -1s}, now);
  auto r = check_device_certificate({expired.der(), {}}, thumbprints(crypto::sha1_hex(expired.der())), "dev-1", {}, {},
                                    now);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("expired"), std::string::npos) << r.error().message;

  const issued future = make_cert({.cn = "dev-1", .not_before = 1h, .not_after = 48h}, now);
  auto f = check_device_certificate({future.der(), {}}, thumbprints(crypto::sha1_hex(future.der())), "dev-1", {}, {},
                                    now);
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().message.find("not valid before"), std::string::npos) << f.error().message;
}

class ca_chain : public ::testing::Test {
 protected:
  sys_time now = manual_clock{}.now();
  issued root = make_cert({.cn = "Root", .ca = true}, now);
  issued inter = make_cert({.cn = "Intermediate", .ca = true}, now, &root);
  std::vector<trust_anchor> anchors{{"root", root.der()}};

  result<device_certificate> check(const client_chain& chain, std::string_view device_id,
                                   std::string_view module_id = {}) const {
    return check_device_certificate(chain, ca_auth(), device_id, module_id, anchors, now);
  }
};

TEST_F(ca_chain, leaf_signed_by_the_root) {
  const issued dev = make_cert({.cn = "dev-1"}, now, &root);
  auto r = check({dev.der(), {}}, "dev-1");
  ASSERT_TRUE(r) << reason_of(r);
  EXPECT_EQ(r->method, registry::auth_type::certificate_authority);
  EXPECT_EQ(r->anchor_name, "root");
  EXPECT_EQ(r->device_id, "dev-1");
}

TEST_F(ca_chain, leaf_through_an_intermediate_the_client_sends) {
  const issued dev = make_cert({.cn = "dev-1"}, now, &inter);
  auto r = check({dev.der(), {inter.der()}}, "dev-1");
  ASSERT_TRUE(r) << reason_of(r);
  EXPECT_EQ(r->anchor_name, "root");
  // Clients often send the leaf again, and sometimes the root: both harmless.
  EXPECT_TRUE(check({dev.der(), {dev.der(), inter.der(), root.der()}}, "dev-1"));

  auto missing = check({dev.der(), {}}, "dev-1");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("unable to get local issuer certificate"), std::string::npos)
      << missing.error().message;
}

TEST_F(ca_chain, verified_intermediate_alone_is_an_anchor) {
  const issued dev = make_cert({.cn = "dev-1"}, now, &inter);
  const std::vector<trust_anchor> only_inter{{"inter", inter.der()}};
  auto r = check_device_certificate({dev.der(), {}}, ca_auth(), "dev-1", {}, only_inter, now);
  ASSERT_TRUE(r) << reason_of(r);
  EXPECT_EQ(r->anchor_name, "inter");
}

TEST_F(ca_chain, common_name_must_be_the_device_id) {
  const issued dev = make_cert({.cn = "dev-2"}, now, &root);
  auto r = check({dev.der(), {}}, "dev-1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::unauthorized);
  EXPECT_NE(r.error().message.find("CN 'dev-2' is not 'dev-1'"), std::string::npos) << r.error().message;
  // Case matters: device ids are case-sensitive.
  const issued upper = make_cert({.cn = "DEV-1"}, now, &root);
  EXPECT_FALSE(check({upper.der(), {}}, "dev-1"));
}

TEST_F(ca_chain, modules_use_device_slash_module) {
  const issued mod = make_cert({.cn = "dev-1/sensor"}, now, &root);
  EXPECT_TRUE(check({mod.der(), {}}, "dev-1", "sensor"));
  EXPECT_FALSE(check({mod.der(), {}}, "dev-1"));
  const issued dev = make_cert({.cn = "dev-1"}, now, &root);
  EXPECT_FALSE(check({dev.der(), {}}, "dev-1", "sensor"));
  EXPECT_EQ(expected_common_name("d", "m"), "d/m");
  EXPECT_EQ(expected_common_name("d", ""), "d");
}

TEST_F(ca_chain, expired_or_future_leaf) {
  const issued expired = make_cert({.cn = "dev-1", .not_before = -48h, .not_after = -1h}, now, &root);
  auto r = check({expired.der(), {}}, "dev-1");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("certificate has expired"), std::string::npos) << r.error().message;
  const issued future = make_cert({.cn = "dev-1", .not_before = 1h}, now, &root);
  auto f = check({future.der(), {}}, "dev-1");
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().message.find("not yet valid"), std::string::npos) << f.error().message;
}

TEST_F(ca_chain, unknown_or_unverified_ca_does_not_count) {
  const issued stranger = make_cert({.cn = "Root", .ca = true}, now);  // same name, other key
  const issued dev = make_cert({.cn = "dev-1"}, now, &stranger);
  auto r = check({dev.der(), {stranger.der()}}, "dev-1");
  ASSERT_FALSE(r) << "a client-sent root is never trusted";

  auto none = check_device_certificate({dev.der(), {}}, ca_auth(), "dev-1", {}, {}, now);
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("no verified CA"), std::string::npos);
}

TEST_F(ca_chain, leaf_that_is_not_a_ca_cannot_sign_devices) {
  const issued dev = make_cert({.cn = "dev-1"}, now, &root);
  const issued grandchild = make_cert({.cn = "dev-2"}, now, &dev);
  EXPECT_FALSE(check({grandchild.der(), {dev.der()}}, "dev-2"));
}

TEST(device_auth, refusals_without_a_usable_certificate) {
  const sys_time now = manual_clock{}.now();
  auto none = check_device_certificate({}, thumbprints(std::string(40, 'A')), "dev-1", {}, {}, now);
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("presented no client certificate"), std::string::npos);
  EXPECT_FALSE(check_device_certificate({"not der", {}}, thumbprints(std::string(40, 'A')), "dev-1", {}, {}, now));

  const issued dev = make_cert({.cn = "dev-1"}, now);
  registry::authentication sas;
  auto r = check_device_certificate({dev.der(), {}}, sas, "dev-1", {}, {}, now);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("uses sas authentication"), std::string::npos) << r.error().message;
}

// ---- service::authenticate_device ----------------------------------------------------------

TEST_F(certificates_test, authenticate_ca_device_against_verified_root) {
  add_device("cam-1", registry::auth_type::certificate_authority);
  const issued dev = make_cert({.cn = "cam-1"}, clk.now(), &root);

  ASSERT_TRUE(certs.put("root", root.pem(), false, std::nullopt));
  auto unverified = certs.authenticate_device({dev.der(), {}}, "cam-1");
  ASSERT_FALSE(unverified) << "an unverified CA authenticates nobody";
  EXPECT_EQ(unverified.error().code, errc::unauthorized);

  ASSERT_TRUE(certs.remove("root", std::string("*")));
  upload_verified("root", root);
  auto ok = certs.authenticate_device({dev.der(), {}}, "cam-1");
  ASSERT_TRUE(ok) << reason_of(ok);
  EXPECT_EQ(ok->anchor_name, "root");

  // The anchor's expiry ends its devices too.
  clk.advance(24h * 366);
  EXPECT_FALSE(certs.authenticate_device({dev.der(), {}}, "cam-1"));
}

TEST_F(certificates_test, authenticate_self_signed_device_and_module) {
  const issued dev = make_cert({.cn = "thermo"}, clk.now());
  add_device("thermo", registry::auth_type::self_signed, crypto::sha256_hex(dev.der()));
  auto ok = certs.authenticate_device({dev.der(), {}}, "thermo");
  ASSERT_TRUE(ok) << reason_of(ok);
  EXPECT_EQ(ok->method, registry::auth_type::self_signed);

  registry::module m;
  m.device_id = "thermo";
  m.module_id = "probe";
  m.auth.type = registry::auth_type::certificate_authority;
  ASSERT_TRUE(reg.create_module(m));
  upload_verified("root", root);
  const issued mod = make_cert({.cn = "thermo/probe"}, clk.now(), &root);
  auto mod_ok = certs.authenticate_device({mod.der(), {}}, "thermo", "probe");
  ASSERT_TRUE(mod_ok) << reason_of(mod_ok);
  EXPECT_EQ(mod_ok->module_id, "probe");
  auto no_module = certs.authenticate_device({mod.der(), {}}, "thermo", "other");
  ASSERT_FALSE(no_module);
  EXPECT_NE(no_module.error().message.find("not registered"), std::string::npos);
}

TEST_F(certificates_test, authenticate_refuses_unknown_disabled_and_sas_devices) {
  const issued dev = make_cert({.cn = "ghost"}, clk.now(), &root);
  upload_verified("root", root);
  auto unknown = certs.authenticate_device({dev.der(), {}}, "ghost");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, errc::unauthorized);
  EXPECT_NE(unknown.error().message.find("not registered"), std::string::npos);

  add_device("ghost", registry::auth_type::certificate_authority);
  auto d = reg.get_device("ghost");
  d->status = registry::device_status::disabled;
  ASSERT_TRUE(reg.update_device(*d, std::string("*")));
  auto disabled = certs.authenticate_device({dev.der(), {}}, "ghost");
  ASSERT_FALSE(disabled);
  EXPECT_EQ(disabled.error().message, "Device 'ghost' is disabled");

  add_device("keyed", registry::auth_type::sas);
  const issued keyed = make_cert({.cn = "keyed"}, clk.now(), &root);
  auto sas = certs.authenticate_device({keyed.der(), {}}, "keyed");
  ASSERT_FALSE(sas);
  EXPECT_NE(sas.error().message.find("uses sas authentication"), std::string::npos);
}

}  // namespace
}  // namespace hub::certificates
