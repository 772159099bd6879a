#pragma once
// A lean server-side TLS connection for long-lived device connections (MQTT, AMQP): OpenSSL reads
// and writes the non-blocking socket itself (SSL_set_fd) and Asio only reports readiness
// (socket.async_wait). Unlike asio::ssl::stream (two 17 KB stream_core buffers plus a 2 x 17 KB
// BIO pair per connection), nothing is buffered outside OpenSSL, and with SSL_MODE_RELEASE_BUFFERS
// OpenSSL frees its record buffers while the connection is idle. See docs/benchmarks.md, "Memory
// per idle TLS connection".
//
// Lifecycle: owned by the connection's coroutine frame (listener.cpp). Used only on the
// connection's executor, with at most one read (read_some or wait_readable) and one write in
// flight. HTTP connections hand the SSL object and the socket over to an asio::ssl::stream after
// protocol detection (release()).
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>

struct ssl_st;
struct ssl_ctx_st;

namespace hub::server {

class tls_socket {
 public:
  // Throws std::bad_alloc when OpenSSL cannot make the SSL object.
  tls_socket(boost::asio::ip::tcp::socket socket, ssl_ctx_st* ctx);
  ~tls_socket();
  tls_socket(const tls_socket&) = delete;
  tls_socket& operator=(const tls_socket&) = delete;

  // The server side of the handshake. No deadline of its own: the caller bounds it.
  boost::asio::awaitable<boost::system::error_code> handshake();
  // Some bytes into `buf` (EOF: asio::error::eof; a peer gone without close_notify:
  // ssl::error::stream_truncated).
  boost::asio::awaitable<std::size_t> read_some(boost::asio::mutable_buffer buf, boost::system::error_code& ec);
  // Returns once read_some would not wait: data, EOF or an error (which read_some then reports).
  // Lets a caller hold no read buffer while the connection is idle.
  boost::asio::awaitable<void> wait_readable();
  // All of `buf`.
  boost::asio::awaitable<void> write(boost::asio::const_buffer buf, boost::system::error_code& ec);
  // Sends close_notify if the socket can take it now; does not wait for the peer's.
  void send_close_notify() noexcept;
  // Closes the socket; pending operations complete with operation_aborted. Idempotent.
  void close() noexcept;

  boost::asio::ip::tcp::socket& socket() noexcept { return socket_; }
  ssl_st* native_handle() const noexcept { return ssl_; }
  // Gives up the SSL object (after the handshake; the caller now frees it). The socket stays
  // here for the caller to move out.
  ssl_st* release() noexcept;

 private:
  enum class step { want_read, want_write, failed };
  step classify(int ret, boost::system::error_code& ec) noexcept;
  boost::asio::awaitable<boost::system::error_code> wait(step s);

  boost::asio::ip::tcp::socket socket_;
  ssl_st* ssl_ = nullptr;
  boost::system::error_code pending_;  // seen by wait_readable, reported by the next read_some
  bool failed_ = false;                // a fatal TLS or socket error: no close_notify
};

}  // namespace hub::server
