#pragma once
// Reads the byte stream a peer sends before Proton does, and stops it at a frame Proton cannot
// take. Proton 0.37 as Debian builds it keeps its assertions, and one well-formed but illegal
// frame aborts the whole process: a transfer with more=true and no delivery-id that starts a
// delivery (transport.c, pn_do_transfer: assert(id_present); found by fuzz_amqp_head). The
// delivery-id may be left out only on the continuation frames of a multi-frame delivery.
//
// The guard follows the frame boundaries (protocol headers, SASL and AMQP frames), decodes the
// performatives that matter (begin, attach, transfer, detach, end) from the start of each frame,
// and keeps, per session channel and link handle, whether the peer's last transfer left a
// delivery unfinished (more=true, not aborted): only then may a transfer come without a
// delivery-id. A transfer it cannot decode is refused too (Proton would refuse it, or read it
// as this guard cannot vouch for), and so is a transfer, attach or detach whose list has a size
// and an element count that disagree: Proton reads the fields by the size, so such a list could
// say more=true to Proton and nothing to a reader that goes by the count (found by
// fuzz_amqp_head after the first fix). A second sasl-init is refused as well: Proton leaks the first
// one's mechanism when it reads it, and so is a frame whose numeric descriptor names no
// performative (Proton stops reading at one and leaves the connection hanging). Everything else
// passes untouched: Proton checks the rest.
//
// Pure: bytes in, a verdict out. Owner: the driver, one per connection; not thread-safe.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <unordered_set>

namespace hub::amqp {

class frame_guard {
 public:
  // Scans the next bytes of the stream and returns how many of them may go to Proton: all of
  // them, or, when a frame that must not reach Proton ends inside `in`, the bytes before that
  // frame's last byte (Proton never acts on an incomplete frame). After that, error() is set and
  // every later call returns 0.
  std::size_t scan(std::span<const char> in);

  // Why the stream was stopped: {condition, description}, e.g. {"amqp:invalid-field", ...}.
  struct refusal {
    std::string condition;
    std::string description;
  };
  const std::optional<refusal>& error() const noexcept { return error_; }

  // How much of a frame is kept for decoding its performative: the longest extended header
  // (doff 255: 1020 bytes) and then ample room for a transfer's first ten fields (delivery tags
  // are at most 32 bytes).
  static constexpr std::size_t prefix_bytes = 2048;

 private:
  // A frame is complete: decide. False: refuse it (error_ set).
  bool complete_frame();
  bool refuse_unknown(std::uint64_t perf);
  void forget_channel(std::uint16_t channel);

  enum class state { head, body, passthrough };
  state st_ = state::head;
  std::string head_;             // the 8 bytes of a protocol header or a frame header
  std::string frame_;            // the frame's first bytes (header included), up to prefix_bytes
  std::uint64_t frame_size_ = 0;
  std::uint64_t frame_got_ = 0;  // bytes of the frame seen so far
  std::unordered_set<std::uint64_t> unfinished_;  // (channel << 32 | handle): a delivery goes on
  bool sasl_init_seen_ = false;
  std::optional<refusal> error_;
};

}  // namespace hub::amqp
