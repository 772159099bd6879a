#pragma once
// X.509 CA certificates as IoT Hub's "Certificates" API describes them (Microsoft.Devices/IotHubs/
// certificates, the ARM API of api-version 2021-07-02 and later), and the X.509 parsing they need.
#include "base/clock.hpp"
#include "base/error.hpp"

#include <boost/json/object.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace hub::certificates {

// A CA certificate registered on the hub.
struct ca_certificate {
  std::string name;
  std::string pem;                 // the certificate, re-encoded as one PEM block
  std::string subject;             // "CN=Contoso Root, O=Contoso" (.NET's X509Certificate2.Subject order)
  std::string thumbprint;          // SHA-1 of the DER, upper-case hex, as IoT Hub shows it
  sys_time not_before{};
  sys_time expiry{};               // notAfter
  bool is_verified = false;
  std::string verification_code;   // the pending proof-of-possession nonce; empty when none
  sys_time created{};
  sys_time updated{};
  std::string etag;                // unquoted
};

// IoT Hub's rule for certificate names: 1..64 of A-Z a-z 0-9 - . _
bool valid_name(std::string_view name) noexcept;

// A certificate's facts, from its text.
struct parsed_certificate {
  std::string der;
  std::string pem;
  std::string subject;
  std::string common_name;         // the last CN of the subject; empty when it has none
  std::string sha1_thumbprint;
  std::string sha256_thumbprint;
  sys_time not_before{};
  sys_time not_after{};
  bool is_ca = false;              // basicConstraints CA:TRUE
};

// Parses one certificate given as PEM ("-----BEGIN CERTIFICATE-----", what a .pem or .crt holds)
// or as base64 of the DER (a .cer file's bytes in base64, which the ARM API also takes).
// ArgumentInvalid with a message naming the problem: not a certificate, more than one, a private
// key included, longer than 64 KiB.
result<parsed_certificate> parse_certificate(std::string_view text);
result<parsed_certificate> parse_certificate_der(std::string_view der);

// RFC 1123 dates, as the Certificates API writes them: "Sat, 31 Dec 2039 23:59:59 GMT".
std::string to_rfc1123(sys_time t);

// The CertificateDescription JSON: {"properties":{subject, expiry, thumbprint, isVerified,
// created, updated, certificate}, "id", "name", "etag", "type"}. `hub_name` goes into the
// ARM-shaped resource id.
boost::json::object to_json(const ca_certificate& c, std::string_view hub_name);
// The CertificateWithNonceDescription JSON: the same with properties.verificationCode.
boost::json::object to_json_with_nonce(const ca_certificate& c, std::string_view hub_name);

// Storage form.
std::string encode(const ca_certificate& c);
result<ca_certificate> decode(std::string_view bytes);

}  // namespace hub::certificates
