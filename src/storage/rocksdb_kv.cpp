#include "storage/kv.hpp"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

namespace hub::storage {
namespace {

error from_status(const rocksdb::Status& s) { return make_error(errc::server_error, "storage: " + s.ToString()); }

class rocksdb_kv final : public kv {
 public:
  explicit rocksdb_kv(std::unique_ptr<rocksdb::DB> db) : db_(std::move(db)) {}

  result<std::optional<std::string>> get(std::string_view key) override {
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), rocksdb::Slice(key.data(), key.size()), &value);
    if (s.IsNotFound()) return std::optional<std::string>{};
    if (!s.ok()) return from_status(s);
    return std::optional<std::string>{std::move(value)};
  }

  result<void> write(const write_batch& batch, bool sync) override {
    rocksdb::WriteBatch wb;
    for (const auto& op : batch.ops()) {
      if (op.value) {
        wb.Put(op.key, *op.value);
      } else {
        wb.Delete(op.key);
      }
    }
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    auto s = db_->Write(wo, &wb);
    if (!s.ok()) return from_status(s);
    return {};
  }

  result<void> scan(std::string_view prefix, std::string_view after, const scan_fn& fn) override {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    // Same start rule as memory_kv: the later of the prefix and the key after `after`.
    if (after.empty() || after < prefix) {
      it->Seek(rocksdb::Slice(prefix.data(), prefix.size()));
    } else {
      it->Seek(rocksdb::Slice(after.data(), after.size()));
      if (it->Valid() && it->key().ToStringView() == after) it->Next();
    }
    for (; it->Valid(); it->Next()) {
      const auto k = it->key().ToStringView();
      if (!k.starts_with(prefix)) break;
      if (!fn(k, it->value().ToStringView())) break;
    }
    if (!it->status().ok()) return from_status(it->status());
    return {};
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace

result<std::unique_ptr<kv>> open_rocksdb(const std::string& dir) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.IncreaseParallelism(2);
  options.OptimizeLevelStyleCompaction();
  options.max_open_files = 256;
  rocksdb::DB* raw = nullptr;
  auto s = rocksdb::DB::Open(options, dir, &raw);
  if (!s.ok()) {
    if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
      return make_error(errc::service_unavailable,
                        "the data folder " + dir + " is in use by another hubd process (" + s.ToString() + ")");
    }
    return make_error(errc::server_error, "cannot open the database in " + dir + ": " + s.ToString());
  }
  return std::unique_ptr<kv>(std::make_unique<rocksdb_kv>(std::unique_ptr<rocksdb::DB>(raw)));
}

}  // namespace hub::storage
