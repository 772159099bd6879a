#pragma once
// The data folder: where hubd keeps everything that outlives a process.
//
//   DIR/hub.json     the hub's identity: host name and shared access policies (keys; mode 0600)
//   DIR/ca.pem       the local CA certificate clients trust (bring your own: hubd reuses it)
//   DIR/ca.key       its private key (0600)
//   DIR/server.pem   the server certificate, followed by the CA chain
//   DIR/server.key   its private key (0600)
//   DIR/db/          RocksDB: registry (devices, modules, their connection state)
//   DIR/events/      the event log: device-to-cloud telemetry, p<N>/<first sequence>.seg per
//                    partition, whole segments deleted after the retention period
//   DIR/endpoints/<name>/  a custom routing endpoint's event log (same layout and partitions);
//                    a storage endpoint's also holds files.checkpoint.json
//   DIR/storage/<container or name>/  a storage endpoint's files (unless its "path" says where)
//
// Light on purpose (no Asio): hubctl links it to read the identity without a running hubd.
// Everything here runs at startup or in a CLI, so failures throw startup_error with a one-line
// message that names the file.
#include "domain/auth/policies.hpp"

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace hub::server {

// A failure that stops hubd or hubctl before it serves anything; what() is one line for a human.
class startup_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct data_layout {
  std::filesystem::path dir;

  std::filesystem::path hub_json() const { return dir / "hub.json"; }
  std::filesystem::path ca_cert() const { return dir / "ca.pem"; }
  std::filesystem::path ca_key() const { return dir / "ca.key"; }
  std::filesystem::path server_cert() const { return dir / "server.pem"; }
  std::filesystem::path server_key() const { return dir / "server.key"; }
  std::filesystem::path db() const { return dir / "db"; }
  std::filesystem::path events() const { return dir / "events"; }
  std::filesystem::path endpoint(const std::string& name) const { return dir / "endpoints" / name; }
  std::filesystem::path storage() const { return dir / "storage"; }
};

// $HUBD_DATA if set; else /var/lib/hubd for root; else $XDG_DATA_HOME/hubd or ~/.local/share/hubd.
std::filesystem::path default_data_dir();

// Creates the folder (mode 0700) when missing and checks that it is a writable directory.
void ensure_data_dir(const data_layout& layout);

// Reads a whole file. Throws startup_error "cannot read FILE: <reason>".
std::string read_file(const std::filesystem::path& file);

// Replaces `file` atomically: writes FILE.tmp created with `mode`, fsyncs it, renames it over
// FILE and fsyncs the folder, so a crash leaves either the old or the new content, and a key
// never exists on disk with wider permissions than `mode`.
void write_file_atomic(const std::filesystem::path& file, std::string_view content, mode_t mode);

// The identity in DIR/hub.json; nullopt when the file does not exist. Throws startup_error when
// it exists but cannot be read or parsed.
std::optional<auth::hub_identity> load_identity(const data_layout& layout);
void save_identity(const data_layout& layout, const auth::hub_identity& identity);

struct identity_outcome {
  auth::hub_identity identity;
  bool created = false;           // a new hub.json with fresh policies
  bool host_name_changed = false; // hub.json had another host name; the policies keep their keys
};

// Loads hub.json, or creates it with default_policies(); stores `host_name` if it differs.
identity_outcome ensure_identity(const data_layout& layout, std::string_view host_name);

}  // namespace hub::server
