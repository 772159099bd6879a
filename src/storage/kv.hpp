#pragma once
// The storage boundary. Domain services see only this interface; the embedded engine (RocksDB)
// and the in-memory engine for tests implement it, and a cluster engine can later.
//
// Thread safety: every method may be called from any thread concurrently. Calls block; heads run
// them off the I/O threads (see docs/adr/0001-synchronous-domain.md).
#include "base/error.hpp"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hub::storage {

// An atomic group of writes.
class write_batch {
 public:
  struct op {
    std::string key;
    std::optional<std::string> value;  // nullopt = delete
  };
  void put(std::string key, std::string value) { ops_.push_back({std::move(key), std::move(value)}); }
  void del(std::string key) { ops_.push_back({std::move(key), std::nullopt}); }
  const std::vector<op>& ops() const noexcept { return ops_; }
  bool empty() const noexcept { return ops_.empty(); }

 private:
  std::vector<op> ops_;
};

// Visitor for scans: return false to stop.
using scan_fn = std::function<bool(std::string_view key, std::string_view value)>;

class kv {
 public:
  virtual ~kv() = default;
  virtual result<std::optional<std::string>> get(std::string_view key) = 0;
  // Applies the batch atomically. With sync, returns only once the batch is durable on disk.
  virtual result<void> write(const write_batch& batch, bool sync = true) = 0;
  // Visits keys that start with prefix, in byte order, starting after `after` (exclusive) if set.
  virtual result<void> scan(std::string_view prefix, std::string_view after, const scan_fn& fn) = 0;
};

std::unique_ptr<kv> make_memory_kv();
// Opens (creating if needed) the RocksDB engine in dir. Fails with a readable message if the
// folder is unusable or another process holds it.
result<std::unique_ptr<kv>> open_rocksdb(const std::string& dir);

}  // namespace hub::storage
