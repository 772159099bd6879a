#include "server/files.hpp"

#include "base/json.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

namespace hub::server {
namespace fs = std::filesystem;

namespace {

std::string errno_text(int err) { return std::strerror(err); }

// Closes a file descriptor on every path out of write_file_atomic.
class fd_guard {
 public:
  explicit fd_guard(int fd) : fd_(fd) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

std::string home_dir() {
  if (const char* home = std::getenv("HOME"); home && *home) return home;
  if (const passwd* pw = ::getpwuid(::getuid()); pw && pw->pw_dir) return pw->pw_dir;
  return ".";
}

}  // namespace

fs::path default_data_dir() {
  if (const char* dir = std::getenv("HUBD_DATA"); dir && *dir) return dir;
  if (::geteuid() == 0) return "/var/lib/hubd";
  if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg) return fs::path(xdg) / "hubd";
  return fs::path(home_dir()) / ".local" / "share" / "hubd";
}

void ensure_data_dir(const data_layout& layout) {
  const fs::path& dir = layout.dir;
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    if (ec) throw startup_error(fmt::format("cannot use data folder {}: {}", dir.string(), ec.message()));
    // The folder holds private keys: only the owner may look inside.
    fs::create_directories(dir, ec);
    if (ec) throw startup_error(fmt::format("cannot create data folder {}: {}", dir.string(), ec.message()));
    fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  }
  if (!fs::is_directory(dir, ec)) throw startup_error(fmt::format("data folder {} is not a directory", dir.string()));
  if (::access(dir.c_str(), R_OK | W_OK | X_OK) != 0)
    throw startup_error(fmt::format("cannot use data folder {}: {}", dir.string(), errno_text(errno)));
}

std::string read_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw startup_error(fmt::format("cannot read {}: {}", file.string(), errno_text(errno)));
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) throw startup_error(fmt::format("cannot read {}: {}", file.string(), errno_text(errno)));
  return std::move(out).str();
}

void write_file_atomic(const fs::path& file, std::string_view content, mode_t mode) {
  const fs::path tmp = fs::path(file).concat(".tmp");
  auto fail = [&](std::string_view what) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw startup_error(fmt::format("cannot write {}: {} ({})", file.string(), errno_text(err), what));
  };
  // O_EXCL after unlink: a stale .tmp from a crash is replaced, and the mode given to open() is
  // the mode the file is born with (a pre-existing file would keep its wider permissions).
  ::unlink(tmp.c_str());
  fd_guard fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (fd.get() < 0) fail("open");
  // The umask may have narrowed `mode`; certificates must stay world-readable as asked.
  if (::fchmod(fd.get(), mode) != 0) fail("chmod");
  for (std::size_t done = 0; done < content.size();) {
    const ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("write");
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd.get()) != 0) fail("fsync");
  if (::close(fd.release()) != 0) fail("close");
  if (::rename(tmp.c_str(), file.c_str()) != 0) fail("rename");
  // Make the rename itself durable.
  const fs::path parent = file.has_parent_path() ? file.parent_path() : fs::path(".");
  fd_guard dir(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() >= 0) ::fsync(dir.get());
}

std::optional<auth::hub_identity> load_identity(const data_layout& layout) {
  const fs::path file = layout.hub_json();
  std::error_code ec;
  if (!fs::exists(file, ec) && !ec) return std::nullopt;
  const std::string text = read_file(file);
  auto value = json::parse(text);
  if (!value) throw startup_error(fmt::format("{} is not valid JSON: {}", file.string(), value.error().message));
  auto identity = auth::identity_from_json(*value);
  if (!identity) throw startup_error(fmt::format("{} is not a hub identity: {}", file.string(), identity.error().message));
  return std::move(*identity);
}

void save_identity(const data_layout& layout, const auth::hub_identity& identity) {
  std::string text = json::serialize(auth::to_json(identity));
  text += '\n';
  write_file_atomic(layout.hub_json(), text, 0600);
}

identity_outcome ensure_identity(const data_layout& layout, std::string_view host_name) {
  identity_outcome out;
  if (auto existing = load_identity(layout)) {
    out.identity = std::move(*existing);
  } else {
    out.identity.policies = auth::default_policies();
    out.created = true;
  }
  if (out.identity.host_name != host_name) {
    out.host_name_changed = !out.created;
    out.identity.host_name = std::string(host_name);
  }
  if (out.created || out.host_name_changed) save_identity(layout, out.identity);
  return out;
}

}  // namespace hub::server
