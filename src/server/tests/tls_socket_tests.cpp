// tls_socket against a blocking OpenSSL client on loopback: what wait_readable promises (it
// returns once read_some would not wait) when data is already in the socket before it waits,
// when data comes later, and when the peer goes away.
#include "server/files.hpp"
#include "server/tls_material.hpp"
#include "server/tls_socket.hpp"

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <sys/ioctl.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace hub::server {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using asio::ip::tcp;
using namespace std::chrono_literals;

struct ctx_free {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using ctx_ptr = std::unique_ptr<SSL_CTX, ctx_free>;

// A server context with a certificate of hubd's own making, in a folder removed afterwards.
class server_material {
 public:
  server_material() {
    std::string pattern = (fs::path(::testing::TempDir()) / "hubd-tlssock-XXXXXX").string();
    dir_ = ::mkdtemp(pattern.data());
    const data_layout layout{dir_};
    ensure_tls_material(layout, {"127.0.0.1", {"127.0.0.1"}}, std::chrono::system_clock::now());
    ctx_.reset(SSL_CTX_new(TLS_server_method()));
    EXPECT_EQ(SSL_CTX_use_certificate_chain_file(ctx_.get(), layout.server_cert().c_str()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey_file(ctx_.get(), layout.server_key().c_str(), SSL_FILETYPE_PEM), 1);
  }
  ~server_material() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  SSL_CTX* ctx() const { return ctx_.get(); }

 private:
  fs::path dir_;
  ctx_ptr ctx_;
};

// Bytes the kernel holds for the socket, not yet read by anyone.
int queued(tcp::socket& s) {
  int n = 0;
  ::ioctl(s.native_handle(), FIONREAD, &n);
  return n;
}

// A blocking TLS client on its own thread: connects, then sends each string it is given and
// closes when given "".
class client {
 public:
  explicit client(unsigned short port) {
    thread_ = std::thread([this, port] { run(port); });
  }
  ~client() {
    send("");
    thread_.join();
  }
  void send(std::string text) {
    {
      std::scoped_lock lock(mutex_);
      next_.push_back(std::move(text));
    }
    cv_.notify_one();
  }

 private:
  void run(unsigned short port) {
    asio::io_context io;
    tcp::socket sock(io);
    sock.connect({asio::ip::make_address("127.0.0.1"), port});
    ctx_ptr ctx(SSL_CTX_new(TLS_client_method()));
    SSL* ssl = SSL_new(ctx.get());
    SSL_set_fd(ssl, static_cast<int>(sock.native_handle()));
    if (SSL_connect(ssl) != 1) ADD_FAILURE() << "client handshake failed";
    for (;;) {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return !next_.empty(); });
      const std::string text = next_.front();
      next_.erase(next_.begin());
      lock.unlock();
      if (text.empty()) break;
      SSL_write(ssl, text.data(), static_cast<int>(text.size()));
    }
    SSL_shutdown(ssl);
    SSL_free(ssl);
  }

  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::string> next_;
};

// Runs `body` as a coroutine on `io` until it finishes or `limit` passes; false on the limit.
template <class Body>
bool run_for(asio::io_context& io, std::chrono::milliseconds limit, Body body) {
  bool done = false;
  io.restart();  // run_for stopped it when the last body ran out of work
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    co_await body();
    done = true;
  }, asio::detached);
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done && std::chrono::steady_clock::now() < deadline) io.run_for(10ms);
  return done;
}

asio::awaitable<void> sleep(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

TEST(tls_socket, wait_readable_sees_data_that_was_there_before_it_waited_and_data_that_comes_later) {
  server_material material;
  asio::io_context io;
  tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  client peer(acceptor.local_endpoint().port());
  tcp::socket accepted = acceptor.accept();
  accepted.non_blocking(true);
  tls_socket tls(std::move(accepted), material.ctx());
  char buf[256];
  std::string got;

  ASSERT_TRUE(run_for(io, 5s, [&]() -> asio::awaitable<void> {
    EXPECT_FALSE(co_await tls.handshake());
  }));

  // Already there: the record sits in the kernel's buffer before wait_readable is called.
  peer.send("first");
  for (int i = 0; i < 500 && queued(tls.socket()) == 0; ++i) std::this_thread::sleep_for(2ms);
  ASSERT_GT(queued(tls.socket()), 0);
  // Let the reactor poll once while nobody waits on the socket, so that the edge of its arrival
  // is consumed: the wait below sees the record only if the wait itself looks again.
  ASSERT_TRUE(run_for(io, 2s, [&]() -> asio::awaitable<void> { co_await sleep(30ms); }));
  ASSERT_GT(queued(tls.socket()), 0);
  ASSERT_TRUE(run_for(io, 2s, [&]() -> asio::awaitable<void> { co_await tls.wait_readable(); }))
      << "wait_readable missed a record that was in the socket before it waited";
  ASSERT_TRUE(run_for(io, 2s, [&]() -> asio::awaitable<void> {
    boost::system::error_code ec;
    const std::size_t n = co_await tls.read_some(asio::buffer(buf), ec);
    EXPECT_FALSE(ec);
    got.assign(buf, n);
  }));
  EXPECT_EQ(got, "first");

  // Later: nothing in the socket when it starts waiting; a record comes 100 ms on.
  EXPECT_EQ(queued(tls.socket()), 0);
  std::thread later;
  const bool later_done = run_for(io, 3s, [&]() -> asio::awaitable<void> {
    later = std::thread([&peer] {
      std::this_thread::sleep_for(100ms);
      peer.send("second");
    });
    const auto t0 = std::chrono::steady_clock::now();
    co_await tls.wait_readable();
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 50ms);  // it did wait
    boost::system::error_code ec;
    const std::size_t n = co_await tls.read_some(asio::buffer(buf), ec);
    EXPECT_FALSE(ec);
    got.assign(buf, n);
  });
  if (later.joinable()) later.join();
  ASSERT_TRUE(later_done);
  EXPECT_EQ(got, "second");

  // Two records in one go, both already there: one wait, and read_some takes both.
  peer.send("a");
  peer.send("b");
  ASSERT_TRUE(run_for(io, 2s, [&]() -> asio::awaitable<void> {
    co_await sleep(100ms);
    co_await tls.wait_readable();
    boost::system::error_code ec;
    got.clear();
    while (got.size() < 2 && !ec) {
      const std::size_t n = co_await tls.read_some(asio::buffer(buf), ec);
      got.append(buf, n);
    }
    EXPECT_FALSE(ec);
  }));
  EXPECT_EQ(got, "ab");
}

TEST(tls_socket, wait_readable_returns_when_the_peer_closes_and_read_some_reports_it) {
  server_material material;
  asio::io_context io;
  tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  auto peer = std::make_unique<client>(acceptor.local_endpoint().port());
  tcp::socket accepted = acceptor.accept();
  accepted.non_blocking(true);
  tls_socket tls(std::move(accepted), material.ctx());
  ASSERT_TRUE(run_for(io, 5s, [&]() -> asio::awaitable<void> {
    EXPECT_FALSE(co_await tls.handshake());
  }));
  peer.reset();  // close_notify, then the socket closes
  for (int i = 0; i < 500 && queued(tls.socket()) == 0; ++i) std::this_thread::sleep_for(2ms);
  ASSERT_TRUE(run_for(io, 2s, [&]() -> asio::awaitable<void> {
    co_await tls.wait_readable();
    char buf[16];
    boost::system::error_code ec;
    co_await tls.read_some(asio::buffer(buf), ec);
    EXPECT_TRUE(ec);  // eof (close_notify) or truncated: not a hang, not data
  }));
}

}  // namespace
}  // namespace hub::server
