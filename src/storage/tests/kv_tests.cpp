// The same contract tests run against every storage::kv engine, so the memory engine the domain
// tests use cannot drift from the RocksDB engine hubd runs on.
#include "storage/kv.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace hub::storage {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the system temp folder, removed at scope exit.
class temp_dir {
 public:
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "hub_kv_tests_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

struct engine {
  std::string name;
  std::function<std::unique_ptr<kv>(const fs::path& dir)> open;
};

std::unique_ptr<kv> open_rocksdb_or_fail(const fs::path& dir) {
  auto db = open_rocksdb((dir / "db").string());
  if (!db) throw std::runtime_error("open_rocksdb: " + db.error().message);
  return std::move(*db);
}

const engine engines[] = {
    {"memory", [](const fs::path&) { return make_memory_kv(); }},
    {"rocksdb", open_rocksdb_or_fail},
};

class kv_contract : public ::testing::TestWithParam<engine> {
 protected:
  void SetUp() override { kv_ = GetParam().open(dir_.path()); }

  void put(std::string key, std::string value) {
    write_batch b;
    b.put(std::move(key), std::move(value));
    ASSERT_TRUE(kv_->write(b).has_value());
  }

  std::optional<std::string> get(std::string_view key) {
    auto r = kv_->get(key);
    EXPECT_TRUE(r.has_value());
    return r ? *r : std::nullopt;
  }

  // Keys visited by scan(prefix, after), stopping after `limit` keys (0 = no limit).
  std::vector<std::string> scan_keys(std::string_view prefix, std::string_view after = {}, std::size_t limit = 0) {
    std::vector<std::string> keys;
    auto r = kv_->scan(prefix, after, [&](std::string_view k, std::string_view) {
      keys.emplace_back(k);
      return limit == 0 || keys.size() < limit;
    });
    EXPECT_TRUE(r.has_value());
    return keys;
  }

  void put_scan_fixture() {
    write_batch b;
    for (const char* k : {"d/b", "d/a", "d/c", "e", "c", "m/a/x", "m/a/y", "m/ab/z", "d/"}) b.put(k, k);
    ASSERT_TRUE(kv_->write(b).has_value());
  }

  temp_dir dir_;
  std::unique_ptr<kv> kv_;
};

TEST_P(kv_contract, get_of_absent_key_is_empty_not_an_error) { EXPECT_EQ(get("nope"), std::nullopt); }

TEST_P(kv_contract, put_get_overwrite_delete) {
  put("d/dev1", "v1");
  EXPECT_EQ(get("d/dev1"), "v1");
  put("d/dev1", "v2");
  EXPECT_EQ(get("d/dev1"), "v2");
  write_batch del;
  del.del("d/dev1");
  ASSERT_TRUE(kv_->write(del).has_value());
  EXPECT_EQ(get("d/dev1"), std::nullopt);
  // Deleting what is not there is not an error.
  ASSERT_TRUE(kv_->write(del).has_value());
}

TEST_P(kv_contract, keys_and_values_are_bytes) {
  const std::string key("k\0ey", 4);
  const std::string value("\0\xff\x01", 3);
  put(key, value);
  EXPECT_EQ(get(key), value);
  EXPECT_EQ(get("k"), std::nullopt);
  put("empty", "");
  EXPECT_EQ(get("empty"), "");
}

TEST_P(kv_contract, batch_applies_all_ops_in_order) {
  put("c", "old");
  write_batch b;
  b.put("a", "1");
  b.put("b", "2");
  b.del("c");
  b.put("d", "first");
  b.del("d");     // put then delete in one batch: absent
  b.del("e");
  b.put("e", "5");  // delete then put: present
  ASSERT_TRUE(kv_->write(b, /*sync=*/true).has_value());
  EXPECT_EQ(get("a"), "1");
  EXPECT_EQ(get("b"), "2");
  EXPECT_EQ(get("c"), std::nullopt);
  EXPECT_EQ(get("d"), std::nullopt);
  EXPECT_EQ(get("e"), "5");
}

TEST_P(kv_contract, empty_batch_is_fine) { EXPECT_TRUE(kv_->write(write_batch{}).has_value()); }

TEST_P(kv_contract, unsynced_write_is_still_visible) {
  write_batch b;
  b.put("a", "1");
  ASSERT_TRUE(kv_->write(b, /*sync=*/false).has_value());
  EXPECT_EQ(get("a"), "1");
}

TEST_P(kv_contract, scan_visits_only_the_prefix_in_byte_order) {
  put_scan_fixture();
  EXPECT_EQ(scan_keys("d/"), (std::vector<std::string>{"d/", "d/a", "d/b", "d/c"}));
  // '/' ends an id, so one device's modules never include another device's.
  EXPECT_EQ(scan_keys("m/a/"), (std::vector<std::string>{"m/a/x", "m/a/y"}));
  EXPECT_EQ(scan_keys("zz"), std::vector<std::string>{});
  EXPECT_EQ(scan_keys("").size(), 9u);
}

TEST_P(kv_contract, scan_resumes_after_a_key) {
  put_scan_fixture();
  EXPECT_EQ(scan_keys("d/", "d/a"), (std::vector<std::string>{"d/b", "d/c"}));
  EXPECT_EQ(scan_keys("d/", "d/aa"), (std::vector<std::string>{"d/b", "d/c"}));  // `after` need not exist
  EXPECT_EQ(scan_keys("d/", "d/c"), std::vector<std::string>{});
  EXPECT_EQ(scan_keys("d/", "e"), std::vector<std::string>{});
  // An `after` sorting before the prefix does not hide the prefix.
  EXPECT_EQ(scan_keys("d/", "c"), (std::vector<std::string>{"d/", "d/a", "d/b", "d/c"}));
}

TEST_P(kv_contract, scan_stops_when_the_visitor_says_so) {
  put_scan_fixture();
  EXPECT_EQ(scan_keys("d/", {}, 2), (std::vector<std::string>{"d/", "d/a"}));
}

TEST_P(kv_contract, scan_passes_values) {
  put("p/1", "one");
  put("p/2", "two");
  std::vector<std::pair<std::string, std::string>> seen;
  ASSERT_TRUE(kv_->scan("p/", {}, [&](std::string_view k, std::string_view v) {
                  seen.emplace_back(k, v);
                  return true;
                }).has_value());
  EXPECT_EQ(seen, (std::vector<std::pair<std::string, std::string>>{{"p/1", "one"}, {"p/2", "two"}}));
}

INSTANTIATE_TEST_SUITE_P(engines, kv_contract, ::testing::ValuesIn(engines),
                         [](const ::testing::TestParamInfo<engine>& info) { return info.param.name; });

// --- RocksDB only -----------------------------------------------------------------------------

TEST(rocksdb_kv, data_survives_reopen) {
  temp_dir dir;
  const auto path = (dir.path() / "db").string();
  {
    auto db = open_rocksdb(path);
    ASSERT_TRUE(db.has_value()) << db.error().message;
    write_batch b;
    b.put("d/dev1", "record");
    b.put("d/dev2", "gone");
    ASSERT_TRUE((*db)->write(b, /*sync=*/true).has_value());
    write_batch del;
    del.del("d/dev2");
    ASSERT_TRUE((*db)->write(del, /*sync=*/true).has_value());
  }
  auto db = open_rocksdb(path);
  ASSERT_TRUE(db.has_value()) << db.error().message;
  EXPECT_EQ((*db)->get("d/dev1").value(), "record");
  EXPECT_EQ((*db)->get("d/dev2").value(), std::nullopt);
}

TEST(rocksdb_kv, second_open_of_the_same_folder_is_refused) {
  temp_dir dir;
  const auto path = (dir.path() / "db").string();
  auto first = open_rocksdb(path);
  ASSERT_TRUE(first.has_value()) << first.error().message;
  auto second = open_rocksdb(path);
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code, errc::service_unavailable);
  EXPECT_NE(second.error().message.find("in use"), std::string::npos);
}

TEST(rocksdb_kv, unusable_folder_gives_a_readable_error) {
  temp_dir dir;
  const auto file = dir.path() / "not_a_dir";
  std::ofstream(file) << "x";
  auto db = open_rocksdb(file.string());
  ASSERT_FALSE(db.has_value());
  EXPECT_NE(db.error().message.find(file.string()), std::string::npos);
}

}  // namespace
}  // namespace hub::storage
