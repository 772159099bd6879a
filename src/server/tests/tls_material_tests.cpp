#include "server/files.hpp"
#include "server/tls_material.hpp"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

namespace hub::server {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// A fresh folder under the test temp dir, removed afterwards.
class temp_dir {
 public:
  temp_dir() {
    std::string pattern = (fs::path(::testing::TempDir()) / "hubd-tls-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

struct x509_free_t {
  void operator()(X509* x) const { X509_free(x); }
};
using x509_ptr = std::unique_ptr<X509, x509_free_t>;

x509_ptr load(const fs::path& file) {
  const std::string text = read_file(file);
  BIO* bio = BIO_new_mem_buf(text.data(), static_cast<int>(text.size()));
  x509_ptr cert(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  return cert;
}

bool signed_by(X509* cert, X509* ca) { return X509_verify(cert, X509_get0_pubkey(ca)) == 1; }

bool contains(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

mode_t mode_of(const fs::path& p) {
  struct stat st {};
  ::stat(p.c_str(), &st);
  return st.st_mode & 0777;
}

const sys_time now = std::chrono::system_clock::now();

TEST(tls_material, creates_a_ca_and_a_server_certificate_for_an_ip_host_name) {
  temp_dir dir;
  const data_layout layout{dir.path()};
  const tls_report report = ensure_tls_material(layout, {"127.0.0.77", {"127.0.0.77", "::"}}, now);

  EXPECT_TRUE(report.ca_created);
  EXPECT_TRUE(report.server_cert_issued);
  EXPECT_EQ(report.reason, "server.pem is missing");
  EXPECT_EQ(report.ca_subject.rfind("CN=hubd local CA ", 0), 0u) << report.ca_subject;
  EXPECT_EQ(report.subject_alt_names,
            (std::vector<std::string>{"IP:127.0.0.77", "DNS:localhost", "IP:127.0.0.1", "IP:::1"}));

  EXPECT_EQ(mode_of(layout.ca_key()), 0600u);
  EXPECT_EQ(mode_of(layout.server_key()), 0600u);
  EXPECT_EQ(mode_of(layout.ca_cert()), 0644u);

  auto ca = load(layout.ca_cert());
  auto leaf = load(layout.server_cert());
  ASSERT_TRUE(ca && leaf);
  EXPECT_EQ(X509_check_ca(ca.get()), 1);
  EXPECT_TRUE(signed_by(ca.get(), ca.get()));
  EXPECT_TRUE(signed_by(leaf.get(), ca.get()));
  EXPECT_EQ(X509_check_ip_asc(leaf.get(), "127.0.0.77", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(leaf.get(), "::1", 0), 1);
  EXPECT_EQ(X509_check_host(leaf.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ca(leaf.get()), 0);
  EXPECT_TRUE(X509_get_extended_key_usage(leaf.get()) & XKU_SSL_SERVER);

  // A real chain check, as a client does it.
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca.get());
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf.get(), nullptr);
  EXPECT_EQ(X509_verify_cert(ctx), 1) << X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
}

TEST(tls_material, reuses_what_still_fits) {
  temp_dir dir;
  const data_layout layout{dir.path()};
  ensure_tls_material(layout, {"localhost", {}}, now);
  const std::string ca_before = read_file(layout.ca_cert());
  const std::string leaf_before = read_file(layout.server_cert());

  const tls_report again = ensure_tls_material(layout, {"localhost", {"127.0.0.1"}}, now + 24h);
  EXPECT_FALSE(again.ca_created);
  EXPECT_FALSE(again.server_cert_issued);
  EXPECT_EQ(read_file(layout.ca_cert()), ca_before);
  EXPECT_EQ(read_file(layout.server_cert()), leaf_before);
}

TEST(tls_material, reissues_the_server_certificate_when_the_host_name_changes) {
  temp_dir dir;
  const data_layout layout{dir.path()};
  ensure_tls_material(layout, {"localhost", {}}, now);
  const std::string ca_before = read_file(layout.ca_cert());

  const tls_report report = ensure_tls_material(layout, {"myhub.local", {}}, now);
  EXPECT_FALSE(report.ca_created);
  EXPECT_TRUE(report.server_cert_issued);
  EXPECT_EQ(report.reason, "server.pem does not cover DNS:myhub.local");
  EXPECT_TRUE(contains(report.subject_alt_names, "DNS:myhub.local"));
  EXPECT_EQ(read_file(layout.ca_cert()), ca_before);  // clients keep trusting the same CA

  // A new bound address is a change too.
  const tls_report with_address = ensure_tls_material(layout, {"myhub.local", {"127.0.0.9"}}, now);
  EXPECT_TRUE(with_address.server_cert_issued);
  EXPECT_TRUE(contains(with_address.subject_alt_names, "IP:127.0.0.9"));
}

TEST(tls_material, reissues_a_certificate_close_to_expiry) {
  temp_dir dir;
  const data_layout layout{dir.path()};
  ensure_tls_material(layout, {"localhost", {}}, now);
  const tls_report report = ensure_tls_material(layout, {"localhost", {}}, now + 24h * 800);
  EXPECT_TRUE(report.server_cert_issued);
  EXPECT_EQ(report.reason, "server.pem expires within 30 days");
}

TEST(tls_material, reissues_a_certificate_not_valid_yet) {
  temp_dir dir;
  const data_layout layout{dir.path()};
  ensure_tls_material(layout, {"localhost", {}}, now - 24h * 10);  // the CA: valid from 10 days ago
  // A new host name: the server certificate is issued now, valid from an hour ago ...
  ensure_tls_material(layout, {"127.0.0.9", {}}, now);
  // ... and a clock set back by two hours finds it not valid yet.
  const tls_report report = ensure_tls_material(layout, {"127.0.0.9", {}}, now - 2h);
  EXPECT_TRUE(report.server_cert_issued);
  EXPECT_EQ(report.reason, "server.pem is not valid yet");
}

TEST(tls_material, reuses_a_ca_someone_brought) {
  temp_dir theirs;
  temp_dir ours;
  ensure_tls_material(data_layout{theirs.path()}, {"localhost", {}}, now);
  fs::copy_file(theirs.path() / "ca.pem", ours.path() / "ca.pem");
  fs::copy_file(theirs.path() / "ca.key", ours.path() / "ca.key");

  const data_layout layout{ours.path()};
  const tls_report report = ensure_tls_material(layout, {"127.0.0.5", {}}, now);
  EXPECT_FALSE(report.ca_created);
  EXPECT_TRUE(report.server_cert_issued);
  auto their_ca = load(theirs.path() / "ca.pem");
  auto leaf = load(layout.server_cert());
  EXPECT_TRUE(signed_by(leaf.get(), their_ca.get()));

  // A server certificate from another CA is replaced.
  temp_dir other;
  ensure_tls_material(data_layout{other.path()}, {"127.0.0.5", {}}, now);
  fs::copy_file(other.path() / "server.pem", ours.path() / "server.pem", fs::copy_options::overwrite_existing);
  fs::copy_file(other.path() / "server.key", ours.path() / "server.key", fs::copy_options::overwrite_existing);
  const tls_report replaced = ensure_tls_material(layout, {"127.0.0.5", {}}, now);
  EXPECT_TRUE(replaced.server_cert_issued);
  EXPECT_EQ(replaced.reason, "server.pem is not signed by the current CA");
}

TEST(tls_material, names_the_file_that_is_broken) {
  temp_dir dir;
  const data_layout layout{dir.path()};
  ensure_tls_material(layout, {"localhost", {}}, now);
  std::ofstream(layout.server_cert()) << "not a certificate\n";
  try {
    ensure_tls_material(layout, {"localhost", {}}, now);
    FAIL() << "expected startup_error";
  } catch (const startup_error& e) {
    EXPECT_NE(std::string(e.what()).find(layout.server_cert().string() + " is not a PEM certificate"), std::string::npos)
        << e.what();
  }

  fs::remove(layout.ca_key());
  try {
    ensure_tls_material(layout, {"localhost", {}}, now);
    FAIL() << "expected startup_error";
  } catch (const startup_error& e) {
    EXPECT_NE(std::string(e.what()).find("ca.key is missing"), std::string::npos) << e.what();
  }
}

// The startup_error's text of ensure_tls_material(), or "" when it succeeds.
std::string start_error(const data_layout& layout, sys_time when) {
  try {
    ensure_tls_material(layout, {"localhost", {}}, when);
  } catch (const startup_error& e) {
    return e.what();
  }
  return {};
}

TEST(tls_material, refuses_a_ca_outside_its_validity_and_warns_before_it_expires) {
  temp_dir dir;
  const data_layout layout{dir.path()};
  ensure_tls_material(layout, {"localhost", {}}, now);  // a CA valid from now - 1 h for 3650 days
  EXPECT_NE(start_error(layout, now + 24h * 3651).find("ca.pem expired on "), std::string::npos);
  EXPECT_NE(start_error(layout, now - 2h).find("ca.pem is not valid before "), std::string::npos);
  const tls_report soon = ensure_tls_material(layout, {"localhost", {}}, now + 24h * 3630);
  ASSERT_EQ(soon.warnings.size(), 1u);
  EXPECT_NE(soon.warnings[0].find("ca.pem expires on "), std::string::npos) << soon.warnings[0];
  EXPECT_TRUE(ensure_tls_material(layout, {"localhost", {}}, now).warnings.empty());
}

TEST(tls_material, a_ca_key_others_can_read_stops_the_start_and_one_the_group_can_read_warns) {
  temp_dir dir;
  const data_layout layout{dir.path()};
  ensure_tls_material(layout, {"localhost", {}}, now);
  fs::permissions(layout.ca_key(), static_cast<fs::perms>(0644), fs::perm_options::replace);
  EXPECT_NE(start_error(layout, now).find("ca.key is accessible by other users (mode 0044)"), std::string::npos)
      << start_error(layout, now);
  fs::permissions(layout.ca_key(), static_cast<fs::perms>(0640), fs::perm_options::replace);
  const tls_report report = ensure_tls_material(layout, {"localhost", {}}, now);
  ASSERT_EQ(report.warnings.size(), 1u);
  EXPECT_NE(report.warnings[0].find("ca.key is accessible by its group (mode 0040)"), std::string::npos);
}

TEST(tls_material, a_server_key_others_can_read_is_replaced) {
  temp_dir dir;
  const data_layout layout{dir.path()};
  ensure_tls_material(layout, {"localhost", {}}, now);
  const std::string old_key = read_file(layout.server_key());
  fs::permissions(layout.server_key(), static_cast<fs::perms>(0644), fs::perm_options::replace);
  const tls_report report = ensure_tls_material(layout, {"localhost", {}}, now);
  EXPECT_TRUE(report.server_cert_issued);
  EXPECT_EQ(report.reason, "server.key is accessible by group or other users (mode 0044)");
  EXPECT_NE(read_file(layout.server_key()), old_key);
  EXPECT_EQ(mode_of(layout.server_key()), 0600u);
}

TEST(tls_material, required_alt_names_skip_wildcards_and_duplicates) {
  EXPECT_EQ(required_alt_names({"127.0.0.1", {"0.0.0.0", "::", "127.0.0.1", "0:0::1", "127.0.0.2"}}),
            (std::vector<std::string>{"IP:127.0.0.1", "DNS:localhost", "IP:::1", "IP:127.0.0.2"}));
}

}  // namespace
}  // namespace hub::server
