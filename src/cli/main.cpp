// hubctl: manage a hubd hub from the shell. Reads the hub identity from the data folder (works
// without a running hubd), and manages devices over the same REST API the Azure service SDK uses.
#include "base/crypto.hpp"
#include "base/json.hpp"
#include "base/text.hpp"
#include "cli/monitor_command.hpp"
#include "cli/rest_client.hpp"
#include "domain/auth/policies.hpp"
#include "domain/auth/sas.hpp"
#include "server/config.hpp"
#include "server/files.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

namespace hub::cli {
namespace {

namespace bj = boost::json;
namespace fs = std::filesystem;

constexpr const char* api_version = "2021-04-12";

struct global_options {
  std::string data_dir;
  std::string connection_string;
  std::string ca_file;
  std::uint16_t port = 443;
};

// What hubctl needs to call the REST API as a service: host and a policy key.
struct hub_access {
  std::string host_name;
  std::string key_name;
  std::string key;
};

server::data_layout layout_of(const global_options& g) {
  return server::data_layout{g.data_dir.empty() ? server::default_data_dir() : fs::path(g.data_dir)};
}

auth::hub_identity load_identity_or_fail(const global_options& g) {
  const server::data_layout layout = layout_of(g);
  auto identity = server::load_identity(layout);
  if (!identity)
    throw cli_error(fmt::format("no hub in {} ({} is missing): start hubd or run `hubd --init --data {}`",
                                layout.dir.string(), layout.hub_json().string(), layout.dir.string()));
  return std::move(*identity);
}

const auth::policy& find_policy(const auth::hub_identity& identity, std::string_view name) {
  if (const auth::policy* p = identity.find(name)) return *p;
  std::string names;
  for (const auto& p : identity.policies) names += (names.empty() ? "" : ", ") + p.name;
  throw cli_error(fmt::format("no shared access policy '{}' (the hub has: {})", name, names));
}

// "HostName=h;SharedAccessKeyName=n;SharedAccessKey=k". Keys are base64 and may end in '=', so
// each field splits at its first '=' only.
hub_access parse_service_connection_string(std::string_view cs) {
  hub_access access;
  bool device = false;
  for (std::string_view part : text::split(cs, ';')) {
    part = text::trim(part);
    if (part.empty()) continue;
    const auto eq = part.find('=');
    if (eq == std::string_view::npos) throw cli_error("malformed connection string: expected Name=value fields");
    const std::string_view name = part.substr(0, eq);
    const std::string_view value = part.substr(eq + 1);
    if (text::iequals(name, "HostName")) access.host_name = value;
    else if (text::iequals(name, "SharedAccessKeyName")) access.key_name = value;
    else if (text::iequals(name, "SharedAccessKey")) access.key = value;
    else if (text::iequals(name, "DeviceId")) device = true;
  }
  if (device) throw cli_error("this is a device connection string; hubctl needs a service one (SharedAccessKeyName=...)");
  if (access.host_name.empty() || access.key_name.empty() || access.key.empty())
    throw cli_error("connection string needs HostName, SharedAccessKeyName and SharedAccessKey");
  return access;
}

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (v && *v) return std::string(v);
  return std::nullopt;
}

// --connection-string, else $HUBD_CONNECTION_STRING, else `policy` (iothubowner) from hub.json.
hub_access resolve_access(const global_options& g, std::string_view policy = "iothubowner") {
  if (!g.connection_string.empty()) return parse_service_connection_string(g.connection_string);
  if (auto cs = env("HUBD_CONNECTION_STRING")) return parse_service_connection_string(*cs);
  const auth::hub_identity identity = load_identity_or_fail(g);
  const auth::policy& p = find_policy(identity, policy);
  return hub_access{identity.host_name, p.name, p.primary_key};
}

std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string service_token(const hub_access& access, std::int64_t lifetime_seconds = 3600) {
  return auth::make_sas_token(access.host_name, access.key, now_seconds() + lifetime_seconds, access.key_name);
}

rest_endpoint endpoint_of(const global_options& g, const hub_access& access) {
  rest_endpoint ep;
  ep.host = access.host_name;
  ep.port = g.port;
  if (!g.ca_file.empty()) {
    ep.ca_file = g.ca_file;
  } else {
    // The hub's own CA when the data folder has one; otherwise the system store (a hub with a
    // publicly trusted certificate, or a CA already installed system-wide).
    std::error_code ec;
    const fs::path ca = layout_of(g).ca_cert();
    if (fs::exists(ca, ec)) ep.ca_file = ca.string();
  }
  return ep;
}

// IoT Hub's error body: {"Message":"ErrorCode:DeviceNotFound;Device 'x' not found",...} plus the
// iothub-errorcode header. Turned into "DeviceNotFound: Device 'x' not found".
std::string describe_error(const rest_reply& reply) {
  std::string code(reply.header("iothub-errorcode").value_or(""));
  std::string message;
  if (auto body = json::parse(reply.body); body && body->is_object()) {
    if (auto m = json::get_string(body->as_object(), "Message")) {
      message = *m;
      if (text::istarts_with(message, "ErrorCode:")) {
        const auto semi = message.find(';');
        if (code.empty()) code = message.substr(10, semi == std::string::npos ? std::string::npos : semi - 10);
        message = semi == std::string::npos ? std::string() : message.substr(semi + 1);
      }
    }
  }
  if (code.empty()) code = fmt::format("HTTP {}", reply.status);
  if (message.empty()) message = reply.body.empty() ? "no details" : reply.body.substr(0, 200);
  return fmt::format("{}: {}", code, message);
}

class rest_api {
 public:
  explicit rest_api(const global_options& g) : access_(resolve_access(g)), ep_(endpoint_of(g, access_)) {}

  const hub_access& access() const noexcept { return access_; }

  // Sends the request; throws cli_error with IoT Hub's error unless the status is 2xx.
  rest_reply call(std::string_view method, const std::string& path, const std::string& body = {},
                  header_list extra = {}) const {
    header_list headers = std::move(extra);
    headers.emplace_back("Authorization", service_token(access_));
    if (!body.empty()) headers.emplace_back("Content-Type", "application/json; charset=utf-8");
    const std::string target = fmt::format("{}{}api-version={}", path, path.find('?') == std::string::npos ? "?" : "&", api_version);
    rest_reply reply = send_request(ep_, method, target, headers, body);
    if (reply.status < 200 || reply.status > 299) throw cli_error(describe_error(reply));
    return reply;
  }

  bj::value call_json(std::string_view method, const std::string& path, const std::string& body = {},
                      header_list extra = {}) const {
    rest_reply reply = call(method, path, body, std::move(extra));
    if (reply.body.empty()) return nullptr;
    json::parse_limits limits;
    limits.max_size = 64 * 1024 * 1024;
    auto value = json::parse(reply.body, limits);
    if (!value) throw cli_error(fmt::format("the hub sent malformed JSON: {}", value.error().message));
    return std::move(*value);
  }

 private:
  hub_access access_;
  rest_endpoint ep_;
};

std::string device_path(std::string_view id) { return "/devices/" + text::url_encode(id); }

void print_json(const bj::value& v) { fmt::print("{}\n", json::pretty(v, 2)); }

std::string string_field(const bj::value& v, std::string_view key) {
  if (!v.is_object()) return {};
  return json::get_string(v.as_object(), key).value_or("");
}

std::string primary_key_of(const bj::value& device) {
  if (!device.is_object()) return {};
  const bj::object* a = json::get_object(device.as_object(), "authentication");
  const bj::object* k = a ? json::get_object(*a, "symmetricKey") : nullptr;
  return k ? json::get_string(*k, "primaryKey").value_or("") : std::string();
}

// ---- commands ----------------------------------------------------------------------------

struct device_create_options {
  std::string id;
  std::string auth = "sas";
  std::string primary_thumbprint;
  std::string secondary_thumbprint;
  bool disabled = false;
};

int cmd_device_create(const global_options& g, const device_create_options& o) {
  bj::object auth{{"type", o.auth}};
  if (o.auth == "sas") {
    // Empty keys: the hub generates them, as IoT Hub does.
    auth["symmetricKey"] = bj::object{{"primaryKey", ""}, {"secondaryKey", ""}};
  } else if (o.auth == "selfSigned") {
    if (o.primary_thumbprint.empty()) throw cli_error("--auth selfSigned needs --primary-thumbprint");
    auth["x509Thumbprint"] = bj::object{{"primaryThumbprint", o.primary_thumbprint},
                                        {"secondaryThumbprint", o.secondary_thumbprint.empty() ? o.primary_thumbprint : o.secondary_thumbprint}};
  }
  const bj::object body{{"deviceId", o.id},
                        {"status", o.disabled ? "disabled" : "enabled"},
                        {"authentication", std::move(auth)},
                        {"capabilities", bj::object{{"iotEdge", false}}}};
  rest_api api(g);
  print_json(api.call_json("PUT", device_path(o.id), json::serialize(body)));
  return 0;
}

int cmd_device_list(const global_options& g) {
  rest_api api(g);
  print_json(api.call_json("GET", "/devices"));
  return 0;
}

int cmd_device_show(const global_options& g, const std::string& id) {
  rest_api api(g);
  print_json(api.call_json("GET", device_path(id)));
  return 0;
}

struct device_update_options {
  std::string id;
  bool enable = false;
  bool disable = false;
  std::optional<std::string> status_reason;
};

int cmd_device_update(const global_options& g, const device_update_options& o) {
  rest_api api(g);
  bj::value dev = api.call_json("GET", device_path(o.id));
  if (!dev.is_object()) throw cli_error("the hub sent a device that is not a JSON object");
  bj::object& obj = dev.as_object();
  if (o.enable) obj["status"] = "enabled";
  if (o.disable) obj["status"] = "disabled";
  if (o.status_reason) obj["statusReason"] = *o.status_reason;
  // If-Match with the etag just read: a concurrent change fails with PreconditionFailed instead
  // of being overwritten.
  const std::string etag = string_field(dev, "etag");
  header_list headers{{"If-Match", etag.empty() ? std::string("*") : fmt::format("\"{}\"", etag)}};
  print_json(api.call_json("PUT", device_path(o.id), json::serialize(dev), std::move(headers)));
  return 0;
}

int cmd_device_delete(const global_options& g, const std::string& id) {
  rest_api api(g);
  api.call("DELETE", device_path(id), {}, {{"If-Match", "*"}});
  fmt::print("deleted device {}\n", id);
  return 0;
}

int cmd_device_connection_string(const global_options& g, const std::string& id) {
  rest_api api(g);
  const bj::value dev = api.call_json("GET", device_path(id));
  const std::string key = primary_key_of(dev);
  if (key.empty()) {
    // X.509 devices authenticate with their certificate; the SDKs take "x509=true" for that.
    fmt::print("HostName={};DeviceId={};x509=true\n", api.access().host_name, id);
    return 0;
  }
  fmt::print("HostName={};DeviceId={};SharedAccessKey={}\n", api.access().host_name, id, key);
  return 0;
}

struct sas_options {
  std::string device;
  std::string policy;
  std::int64_t duration = 3600;
};

int cmd_generate_sas_token(const global_options& g, const sas_options& o) {
  if (o.duration <= 0) throw cli_error("--duration must be a positive number of seconds");
  const std::int64_t expiry = now_seconds() + o.duration;
  if (o.device.empty()) {
    // A service token: scoped to the hub, signed with a policy key.
    const hub_access access = resolve_access(g, o.policy.empty() ? "iothubowner" : o.policy);
    if (!o.policy.empty() && access.key_name != o.policy)
      throw cli_error(fmt::format("the connection string is for policy '{}', not '{}'", access.key_name, o.policy));
    fmt::print("{}\n", auth::make_sas_token(access.host_name, access.key, expiry, access.key_name));
    return 0;
  }
  if (!o.policy.empty()) {
    // A device-scoped token signed with a policy key (the policy needs DeviceConnect): offline.
    const hub_access access = resolve_access(g, o.policy);
    fmt::print("{}\n", auth::make_sas_token(access.host_name + "/devices/" + o.device, access.key, expiry, access.key_name));
    return 0;
  }
  // A device's own token, signed with its primary key fetched from the registry.
  rest_api api(g);
  const bj::value dev = api.call_json("GET", device_path(o.device));
  const std::string key = primary_key_of(dev);
  if (key.empty()) throw cli_error(fmt::format("device '{}' has no symmetric key (it authenticates with X.509)", o.device));
  fmt::print("{}\n", auth::make_sas_token(api.access().host_name + "/devices/" + o.device, key, expiry));
  return 0;
}

// The Event Hub-compatible name, as the portal shows it: the hub's name, the host name's first
// label ("myhub" for myhub.example.com). A host given as an IP address has no name: the whole
// address is used. The AMQP head serves any entity name; this is the one to show.
std::string event_hub_name(const std::string& host) {
  const bool ip = host.find_first_not_of("0123456789.") == std::string::npos || host.find(':') != std::string::npos;
  std::string name = ip ? host : host.substr(0, host.find('.'));
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

int cmd_connection_string(const global_options& g, const std::string& policy, bool eventhub) {
  const auth::hub_identity identity = load_identity_or_fail(g);
  const auth::policy& p = find_policy(identity, policy);
  if (eventhub) {
    // The built-in endpoint's Event Hubs-compatible connection string, as the portal shows it.
    fmt::print("Endpoint=sb://{}/;SharedAccessKeyName={};SharedAccessKey={};EntityPath={}\n", identity.host_name, p.name,
               p.primary_key, event_hub_name(identity.host_name));
    return 0;
  }
  fmt::print("{}\n", auth::connection_string(identity, p));
  return 0;
}

int cmd_ca_cert(const global_options& g) {
  const fs::path ca = fs::absolute(layout_of(g).ca_cert()).lexically_normal();
  std::error_code ec;
  if (!fs::exists(ca, ec)) throw cli_error(fmt::format("{} does not exist: start hubd or run `hubd --init`", ca.string()));
  fmt::print("{}\n", ca.string());
  return 0;
}

// ---- X.509 CA certificates (hubd's /certificates API, IoT Hub's ARM Certificates shapes) ----

std::string certificate_path(std::string_view name) { return "/certificates/" + text::url_encode(name); }

// A certificate file as the API takes it: PEM text as is; a binary DER file (.cer/.der) as base64.
std::string read_certificate_file(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw cli_error(fmt::format("{} is not a file", path));
  if (fs::file_size(path, ec) > 64 * 1024) throw cli_error(fmt::format("{} is too large for a certificate", path));
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw cli_error(fmt::format("cannot read {}", path));
  std::string bytes;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) bytes.append(buf, n);
  std::fclose(f);
  // PEM, or base64 text, goes as is; anything with binary bytes is DER.
  const bool text_like = std::all_of(bytes.begin(), bytes.end(), [](unsigned char c) {
    return c == '\n' || c == '\r' || c == '\t' || (c >= 0x20 && c < 0x7f);
  });
  return text_like ? bytes : crypto::base64_encode(bytes);
}

// The certificate's current etag, which every change but the first upload must send as If-Match.
header_list if_match_current(const rest_api& api, std::string_view name) {
  const bj::value cert = api.call_json("GET", certificate_path(name));
  const std::string etag = string_field(cert, "etag");
  return {{"If-Match", etag.empty() ? std::string("*") : fmt::format("\"{}\"", etag)}};
}

struct ca_upload_options {
  std::string name;
  std::string file;
  bool verified = false;
  bool replace = false;
};

int cmd_ca_upload(const global_options& g, const ca_upload_options& o) {
  bj::object props{{"certificate", read_certificate_file(o.file)}, {"isVerified", o.verified}};
  const bj::object body{{"properties", std::move(props)}};
  rest_api api(g);
  header_list headers;
  if (o.replace) headers.emplace_back("If-Match", "*");
  print_json(api.call_json("PUT", certificate_path(o.name), json::serialize(body), std::move(headers)));
  return 0;
}

int cmd_ca_list(const global_options& g) {
  rest_api api(g);
  print_json(api.call_json("GET", "/certificates"));
  return 0;
}

int cmd_ca_show(const global_options& g, const std::string& name) {
  rest_api api(g);
  print_json(api.call_json("GET", certificate_path(name)));
  return 0;
}

// Prints only the code, so scripts can take it: CODE=$(hubctl ca verification-code root).
int cmd_ca_verification_code(const global_options& g, const std::string& name) {
  rest_api api(g);
  const bj::value reply =
      api.call_json("POST", certificate_path(name) + "/generateVerificationCode", {}, if_match_current(api, name));
  const bj::object* props = reply.is_object() ? json::get_object(reply.as_object(), "properties") : nullptr;
  const std::string code = props ? json::get_string(*props, "verificationCode").value_or("") : std::string();
  if (code.empty()) throw cli_error("the hub sent no verificationCode");
  fmt::print("{}\n", code);
  return 0;
}

int cmd_ca_verify(const global_options& g, const std::string& name, const std::string& file) {
  const bj::object body{{"certificate", read_certificate_file(file)}};
  rest_api api(g);
  print_json(
      api.call_json("POST", certificate_path(name) + "/verify", json::serialize(body), if_match_current(api, name)));
  return 0;
}

int cmd_ca_delete(const global_options& g, const std::string& name) {
  rest_api api(g);
  api.call("DELETE", certificate_path(name), {}, if_match_current(api, name));
  fmt::print("deleted CA certificate {}\n", name);
  return 0;
}

// ---- message routing (hubd's /routing admin API) ----------------------------------------------

int cmd_route_list(const global_options& g) {
  rest_api api(g);
  print_json(api.call_json("GET", "/routing"));
  return 0;
}

int cmd_route_set(const global_options& g, const std::string& file) {
  const std::string text = server::read_file(file);
  auto parsed = json::parse(text, json::parse_limits{64, 16 * 1024 * 1024});
  if (!parsed) throw cli_error(fmt::format("{} is not JSON: {}", file, parsed.error().message));
  rest_api api(g);
  print_json(api.call_json("PUT", "/routing", json::serialize(*parsed)));
  return 0;
}

struct route_test_options {
  std::string source = "DeviceMessages";
  std::string body;
  std::string json_body;
  std::vector<std::string> properties;  // name=value
  std::vector<std::string> system;      // name=value
  std::string twin;                     // a JSON object, or @FILE
  bool json = false;
};

bj::object pairs_of(const std::vector<std::string>& items, std::string_view what) {
  bj::object out;
  for (const std::string& item : items) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) throw cli_error(fmt::format("{} '{}' is not name=value", what, item));
    out[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return out;
}

int cmd_route_test(const global_options& g, const route_test_options& o) {
  bj::object message;
  bj::object sys = pairs_of(o.system, "--system");
  if (!o.json_body.empty()) {
    message["body"] = o.json_body;
    if (!sys.contains("contentType")) sys["contentType"] = "application/json";
    if (!sys.contains("contentEncoding")) sys["contentEncoding"] = "utf-8";
  } else {
    message["body"] = o.body;
  }
  message["appProperties"] = pairs_of(o.properties, "--property");
  message["systemProperties"] = std::move(sys);
  bj::object input{{"routingSource", o.source}, {"message", std::move(message)}};
  if (!o.twin.empty()) {
    const std::string text = o.twin.starts_with('@') ? server::read_file(o.twin.substr(1)) : o.twin;
    auto twin = json::parse(text);
    if (!twin || !twin->is_object()) throw cli_error("--twin must be a JSON object (or @FILE holding one)");
    input["twin"] = std::move(*twin);
  }
  rest_api api(g);
  const bj::value result = api.call_json("POST", "/routing/test", json::serialize(input));
  if (o.json) {
    print_json(result);
    return 0;
  }
  std::vector<std::string> routes, endpoints;
  for (const bj::value& r : result.at("routes").as_array()) routes.emplace_back(r.at("properties").at("name").as_string());
  for (const bj::value& e : result.at("endpoints").as_array()) endpoints.emplace_back(e.as_string());
  const auto join = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
    return out.empty() ? std::string("(none)") : out;
  };
  fmt::print("matched routes: {}\n", join(routes));
  if (result.at("fallback").as_bool()) fmt::print("fallback route: yes\n");
  fmt::print("endpoints:      {}\n", endpoints.empty() ? std::string("(none: the message would be orphaned)") : join(endpoints));
  return 0;
}

int run(int argc, char** argv) {
  global_options g;
  CLI::App app("hubctl — manage a hubd IoT hub.\n\n"
               "Identity commands read the data folder and work whether or not hubd runs. Device\n"
               "commands call the hub's REST API (the one the Azure service SDK uses) at HostName on\n"
               "--port, authenticated with --connection-string, $HUBD_CONNECTION_STRING, or the\n"
               "iothubowner policy from DIR/hub.json.",
               "hubctl");
  app.set_version_flag("--version", fmt::format("hubctl {}", server::hubd_version));
  app.require_subcommand(1);
  app.fallthrough();
  app.add_option("--data", g.data_dir, "hubd's data folder (default: $HUBD_DATA, /var/lib/hubd as root, else ~/.local/share/hubd)")
      ->type_name("DIR");
  app.add_option("--connection-string", g.connection_string,
                 "Service connection string (default: $HUBD_CONNECTION_STRING, else from DIR/hub.json)")
      ->type_name("CS");
  app.add_option("--port", g.port, "HTTPS port of the hub (a connection string's HostName has none)")
      ->type_name("PORT")
      ->capture_default_str();
  app.add_option("--ca", g.ca_file, "CA certificate(s) to trust (default: DIR/ca.pem if present, else the system store)")
      ->type_name("FILE")
      ->check(CLI::ExistingFile);

  int rc = 0;
  std::function<int()> action;

  std::string cs_policy = "iothubowner";
  auto* cs = app.add_subcommand("connection-string", "Print the hub's connection string for a policy (from DIR/hub.json)");
  bool cs_eventhub = false;
  cs->add_option("--policy", cs_policy, "Shared access policy")->capture_default_str();
  cs->add_flag("--eventhub", cs_eventhub,
               "The Event Hubs-compatible connection string of the built-in endpoint (telemetry), for\n"
               "EventHubConsumerClient: Endpoint=sb://<host>/;...;EntityPath=<hub name>");
  cs->callback([&] { action = [&] { return cmd_connection_string(g, cs_policy, cs_eventhub); }; });

  auto* ca = app.add_subcommand("ca-cert", "Print the path of the hub's CA certificate (DIR/ca.pem)");
  ca->callback([&] { action = [&] { return cmd_ca_cert(g); }; });

  auto* cas = app.add_subcommand("ca", "Manage the X.509 CA certificates the hub trusts for CA-signed devices");
  cas->require_subcommand(1);
  cas->fallthrough();
  ca_upload_options ca_upload;
  auto* caup = cas->add_subcommand("upload", "Upload a root or intermediate CA certificate (PEM or DER file)");
  caup->add_option("name", ca_upload.name, "Certificate name (1-64 of A-Z a-z 0-9 - . _)")->required();
  caup->add_option("file", ca_upload.file, "Certificate file")->required();
  caup->add_flag("--verified", ca_upload.verified, "Mark it verified at once, without proof of possession");
  caup->add_flag("--replace", ca_upload.replace, "Replace a certificate of that name (resets its verification)");
  caup->callback([&] { action = [&] { return cmd_ca_upload(g, ca_upload); }; });
  auto* calist = cas->add_subcommand("list", "List the CA certificates as JSON");
  calist->callback([&] { action = [&] { return cmd_ca_list(g); }; });
  std::string ca_name;
  auto* cashow = cas->add_subcommand("show", "Show one CA certificate as JSON");
  cashow->add_option("name", ca_name, "Certificate name")->required();
  cashow->callback([&] { action = [&] { return cmd_ca_show(g, ca_name); }; });
  auto* cacode = cas->add_subcommand("verification-code",
                                     "Print a new verification code: the CN of the proof-of-possession certificate");
  cacode->add_option("name", ca_name, "Certificate name")->required();
  cacode->callback([&] { action = [&] { return cmd_ca_verification_code(g, ca_name); }; });
  std::string ca_proof;
  auto* caverify = cas->add_subcommand("verify", "Prove possession: upload a certificate with CN=<verification code> "
                                                 "signed by the CA's key");
  caverify->add_option("name", ca_name, "Certificate name")->required();
  caverify->add_option("file", ca_proof, "Verification certificate file (PEM or DER)")->required();
  caverify->callback([&] { action = [&] { return cmd_ca_verify(g, ca_name, ca_proof); }; });
  auto* cadelete = cas->add_subcommand("delete", "Delete a CA certificate");
  cadelete->add_option("name", ca_name, "Certificate name")->required();
  cadelete->callback([&] { action = [&] { return cmd_ca_delete(g, ca_name); }; });

  sas_options sas;
  auto* gen = app.add_subcommand("generate-sas-token", "Print a SAS token (for an Authorization header or a device)");
  gen->add_option("--device", sas.device, "Scope the token to this device; signed with the device's key, fetched from the hub,\n"
                                          "or with --policy's key (offline)")
      ->type_name("ID");
  gen->add_option("--policy", sas.policy, "Shared access policy to sign with (default: iothubowner)")->type_name("NAME");
  gen->add_option("--duration", sas.duration, "Lifetime in seconds")->capture_default_str();
  gen->callback([&] { action = [&] { return cmd_generate_sas_token(g, sas); }; });

  auto* device = app.add_subcommand("device", "Manage device identities over the REST API");
  device->require_subcommand(1);
  device->fallthrough();

  device_create_options create;
  auto* dcreate = device->add_subcommand("create", "Create a device");
  dcreate->add_option("id", create.id, "Device id")->required();
  dcreate->add_option("--auth", create.auth,
                      "Authentication: sas (keys generated), selfSigned (X.509 thumbprints), certificateAuthority\n"
                      "(X.509 signed by a verified CA: `hubctl ca`) or none")
      ->capture_default_str()
      ->check(CLI::IsMember({"sas", "selfSigned", "certificateAuthority", "none"}));
  dcreate->add_option("--primary-thumbprint", create.primary_thumbprint, "SHA-1 or SHA-256 thumbprint (selfSigned)");
  dcreate->add_option("--secondary-thumbprint", create.secondary_thumbprint, "Second thumbprint (selfSigned)");
  dcreate->add_flag("--disabled", create.disabled, "Create it disabled");
  dcreate->callback([&] { action = [&] { return cmd_device_create(g, create); }; });

  auto* dlist = device->add_subcommand("list", "List devices (at most 1000) as JSON");
  dlist->callback([&] { action = [&] { return cmd_device_list(g); }; });

  std::string show_id;
  auto* dshow = device->add_subcommand("show", "Show one device as JSON");
  dshow->add_option("id", show_id, "Device id")->required();
  dshow->callback([&] { action = [&] { return cmd_device_show(g, show_id); }; });

  device_update_options update;
  std::string status_reason;
  auto* dupdate = device->add_subcommand("update", "Change a device's status (read, then write with If-Match)");
  dupdate->add_option("id", update.id, "Device id")->required();
  auto* en = dupdate->add_flag("--enable", update.enable, "Enable the device");
  auto* dis = dupdate->add_flag("--disable", update.disable, "Disable the device");
  en->excludes(dis);
  auto* reason = dupdate->add_option("--status-reason", status_reason, "Why (shown as statusReason)");
  dupdate->callback([&] {
    if (reason->count()) update.status_reason = status_reason;
    action = [&] { return cmd_device_update(g, update); };
  });

  std::string delete_id;
  auto* ddelete = device->add_subcommand("delete", "Delete a device");
  ddelete->add_option("id", delete_id, "Device id")->required();
  ddelete->callback([&] { action = [&] { return cmd_device_delete(g, delete_id); }; });

  std::string dcs_id;
  auto* dcs = device->add_subcommand("connection-string", "Print a device's connection string (with its primary key)");
  dcs->add_option("id", dcs_id, "Device id")->required();
  dcs->callback([&] { action = [&] { return cmd_device_connection_string(g, dcs_id); }; });

  auto* route = app.add_subcommand("route", "Message routing: show, replace or test the routes (hubd's /routing API)");
  route->require_subcommand(1);
  auto* rlist = route->add_subcommand("list", "Print the routing configuration (IoT Hub's ARM routing object) as JSON");
  rlist->callback([&] { action = [&] { return cmd_route_list(g); }; });
  std::string rset_file;
  auto* rset = route->add_subcommand(
      "set", "Replace the routes, fallback route and enrichments from a JSON file (ARM routing shape); hubd writes\n"
             "it to its routing file. Endpoints change only with a restart");
  rset->add_option("file", rset_file, "The routing JSON file")->required()->check(CLI::ExistingFile);
  rset->callback([&] { action = [&] { return cmd_route_set(g, rset_file); }; });
  route_test_options rt;
  auto* rtest = route->add_subcommand("test", "Evaluate a sample message against the routes and print which match (nothing is sent)");
  rtest->add_option("--source", rt.source, "DeviceMessages, TwinChangeEvents, DeviceLifecycleEvents or DeviceConnectionStateEvents")
      ->capture_default_str();
  rtest->add_option("--body", rt.body, "The message body as text");
  rtest->add_option("--json-body", rt.json_body, "A JSON body (sets contentType application/json and contentEncoding utf-8)");
  rtest->add_option("--property", rt.properties, "An application property name=value (repeatable)")->type_name("NAME=VALUE");
  rtest->add_option("--system", rt.system,
                    "A system property name=value: contentType, contentEncoding, connectionDeviceId, messageId, ... (repeatable)")
      ->type_name("NAME=VALUE");
  rtest->add_option("--twin", rt.twin, "The twin $twin conditions read: a JSON object, or @FILE")->type_name("JSON|@FILE");
  rtest->add_flag("--json", rt.json, "Print the hub's answer as JSON");
  rtest->callback([&] { action = [&] { return cmd_route_test(g, rt); }; });

  add_monitor_command(app, g.data_dir, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  return action ? action() : 0;
}

}  // namespace
}  // namespace hub::cli

int main(int argc, char** argv) {
  try {
    return hub::cli::run(argc, argv);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "hubctl: {}\n", e.what());
    return 1;
  }
}
