// The lean TLS connection (tls_socket.hpp): SSL_read/SSL_write straight on the non-blocking
// socket, async_wait for readiness when OpenSSL would block.
//
// GCC 12 (src/server/README.md): no co_await inside a condition or with temporaries beside it.
#include "server/tls_socket.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cerrno>
#include <new>
#include <utility>

namespace hub::server {
namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

tls_socket::tls_socket(tcp::socket socket, SSL_CTX* ctx) : socket_(std::move(socket)), ssl_(SSL_new(ctx)) {
  if (!ssl_) throw std::bad_alloc();
  SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  SSL_set_accept_state(ssl_);
  // Read as many records as one recv brings (not a 5-byte header, then the body, per record):
  // the syscalls per message of Asio's stream, which read 17 KB at a time into its buffer.
  // RELEASE_BUFFERS still frees the read buffer once it holds nothing.
  SSL_set_read_ahead(ssl_, 1);
  error_code ec;
  socket_.non_blocking(true, ec);
  // The socket BIO does not close the descriptor (BIO_NOCLOSE): the Asio socket owns it.
  if (SSL_set_fd(ssl_, static_cast<int>(socket_.native_handle())) != 1) {
    SSL_free(ssl_);
    throw std::bad_alloc();
  }
}

tls_socket::~tls_socket() {
  if (ssl_) SSL_free(ssl_);
}

SSL* tls_socket::release() noexcept { return std::exchange(ssl_, nullptr); }

void tls_socket::close() noexcept {
  error_code ec;
  socket_.shutdown(tcp::socket::shutdown_both, ec);
  socket_.close(ec);
}

tls_socket::step tls_socket::classify(int ret, error_code& ec) noexcept {
  const int saved_errno = errno;
  switch (SSL_get_error(ssl_, ret)) {
    case SSL_ERROR_WANT_READ:
      return step::want_read;
    case SSL_ERROR_WANT_WRITE:
      return step::want_write;
    case SSL_ERROR_ZERO_RETURN:
      ec = asio::error::eof;  // close_notify
      return step::failed;
    case SSL_ERROR_SYSCALL:
      failed_ = true;
      ec = saved_errno != 0 ? error_code(saved_errno, asio::error::get_system_category())
                            : error_code(asio::ssl::error::stream_truncated);
      return step::failed;
    default: {
      failed_ = true;
      const unsigned long e = ERR_get_error();
      // OpenSSL 3: a TCP EOF without close_notify; Asio's streams call it stream_truncated too.
      if (ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ec = asio::ssl::error::stream_truncated;
      } else {
        ec = error_code(static_cast<int>(e), asio::error::get_ssl_category());
      }
      ERR_clear_error();
      return step::failed;
    }
  }
}

// OpenSSL saw EAGAIN on the socket just now, so the readiness edge is still to come.
asio::awaitable<error_code> tls_socket::wait(step s) {
  const auto what = s == step::want_read ? tcp::socket::wait_read : tcp::socket::wait_write;
  auto [ec] = co_await socket_.async_wait(what, asio::as_tuple(asio::use_awaitable));
  co_return ec;
}

asio::awaitable<error_code> tls_socket::handshake() {
  for (;;) {
    if (!socket_.is_open()) co_return error_code(asio::error::operation_aborted);
    ERR_clear_error();
    errno = 0;
    const int r = SSL_do_handshake(ssl_);
    if (r == 1) co_return error_code();
    error_code ec;
    const step s = classify(r, ec);
    if (s == step::failed) co_return ec;
    const error_code wec = co_await wait(s);
    if (wec) co_return wec;
  }
}

asio::awaitable<std::size_t> tls_socket::read_some(asio::mutable_buffer buf, error_code& ec) {
  ec.clear();
  if (pending_) {
    ec = std::exchange(pending_, error_code());
    co_return 0;
  }
  for (;;) {
    // Never let OpenSSL touch a closed descriptor: its number may already belong to another socket.
    if (!socket_.is_open()) {
      ec = asio::error::operation_aborted;
      co_return 0;
    }
    ERR_clear_error();
    errno = 0;
    std::size_t n = 0;
    const int r = SSL_read_ex(ssl_, buf.data(), buf.size(), &n);
    if (r == 1) {
      // SSL_read returns one TLS record at a time, and devices send a record per packet: take
      // every record read-ahead already holds, so that one read gives the session every packet
      // that arrived (one batch of publishes for the log, one write of their PUBACKs). Stops at
      // the first call that would wait or fails; the next read_some reports that.
      while (n < buf.size() && SSL_has_pending(ssl_) == 1) {
        ERR_clear_error();
        errno = 0;
        std::size_t more = 0;
        if (SSL_read_ex(ssl_, static_cast<char*>(buf.data()) + n, buf.size() - n, &more) != 1) break;
        n += more;
      }
      co_return n;
    }
    const step s = classify(r, ec);
    if (s == step::failed) co_return 0;
    ec = co_await wait(s);
    if (ec) co_return 0;
  }
}

asio::awaitable<void> tls_socket::wait_readable() {
  // The first round waits without reading: the caller has just drained what OpenSSL and the
  // socket held, so a read() now would almost always say EAGAIN, one wasted system call per
  // packet. Waiting first is safe: Asio's epoll reactor re-arms the descriptor
  // (EPOLL_CTL_MOD) for every wait, and the kernel then reports data that is already there.
  bool waited = false;
  while (!pending_ && socket_.is_open()) {
    if (SSL_has_pending(ssl_)) co_return;
    if (!std::exchange(waited, true)) {
      auto [wec] = co_await socket_.async_wait(tcp::socket::wait_read, asio::as_tuple(asio::use_awaitable));
      if (wec) {
        pending_ = wec;
        co_return;
      }
      continue;
    }
    ERR_clear_error();
    errno = 0;
    unsigned char byte = 0;
    std::size_t n = 0;
    const int r = SSL_peek_ex(ssl_, &byte, 1, &n);
    if (r == 1) co_return;
    error_code ec;
    const step s = classify(r, ec);
    if (s == step::failed) {
      pending_ = ec;
      co_return;
    }
    // The wait inline, not through wait(): an idle connection sits here, and each nested
    // coroutine would be one more frame held for as long as it is idle.
    const auto what = s == step::want_read ? tcp::socket::wait_read : tcp::socket::wait_write;
    auto [wec] = co_await socket_.async_wait(what, asio::as_tuple(asio::use_awaitable));
    if (wec) {
      pending_ = wec;
      co_return;
    }
  }
}

asio::awaitable<void> tls_socket::write(asio::const_buffer buf, error_code& ec) {
  ec.clear();
  const auto* data = static_cast<const unsigned char*>(buf.data());
  std::size_t left = buf.size();
  while (left > 0) {
    if (!socket_.is_open()) {
      ec = asio::error::operation_aborted;
      co_return;
    }
    ERR_clear_error();
    errno = 0;
    std::size_t n = 0;
    const int r = SSL_write_ex(ssl_, data, left, &n);
    if (r == 1) {
      data += n;
      left -= n;
      continue;
    }
    const step s = classify(r, ec);
    if (s == step::failed) co_return;
    ec = co_await wait(s);
    if (ec) co_return;
  }
}

void tls_socket::send_close_notify() noexcept {
  if (failed_ || !ssl_ || !socket_.is_open() || !SSL_is_init_finished(ssl_)) return;
  ERR_clear_error();
  SSL_shutdown(ssl_);  // one try: a socket that cannot take 31 bytes now is not worth waiting for
  ERR_clear_error();
}

}  // namespace hub::server
