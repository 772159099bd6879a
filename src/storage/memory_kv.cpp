#include "storage/kv.hpp"

#include <map>
#include <shared_mutex>

namespace hub::storage {
namespace {

class memory_kv final : public kv {
 public:
  result<std::optional<std::string>> get(std::string_view key) override {
    std::shared_lock lock(mutex_);
    auto it = data_.find(key);
    if (it == data_.end()) return std::optional<std::string>{};
    return std::optional<std::string>{it->second};
  }

  result<void> write(const write_batch& batch, bool) override {
    std::unique_lock lock(mutex_);
    for (const auto& op : batch.ops()) {
      if (op.value) {
        data_.insert_or_assign(op.key, *op.value);
      } else {
        data_.erase(op.key);
      }
    }
    return {};
  }

  result<void> scan(std::string_view prefix, std::string_view after, const scan_fn& fn) override {
    std::shared_lock lock(mutex_);
    // Start at the later of "first key with the prefix" and "first key after `after`": an
    // `after` that sorts before the prefix must not end the scan before it reaches the prefix.
    auto it = after.empty() || after < prefix ? data_.lower_bound(prefix) : data_.upper_bound(after);
    for (; it != data_.end(); ++it) {
      if (!std::string_view(it->first).starts_with(prefix)) break;
      if (!fn(it->first, it->second)) break;
    }
    return {};
  }

 private:
  std::shared_mutex mutex_;
  std::map<std::string, std::string, std::less<>> data_;
};

}  // namespace

std::unique_ptr<kv> make_memory_kv() { return std::make_unique<memory_kv>(); }

}  // namespace hub::storage
