#pragma once
// A storage endpoint (protocol/semantics.md §2.7) as files: the messages routed to the endpoint
// are durable in its staging event log the moment the device is acknowledged; the file writer
// turns them into batch files, one JSON object per line with IoT Hub's storage names:
//   {"EnqueuedTimeUtc": "...Z", "Properties": {...},
//    "SystemProperties": {"messageId", "correlationId", "connectionDeviceId", "connectionModuleId",
//                         "connectionAuthMethod", "connectionDeviceGenerationId", "contentType",
//                         "contentEncoding", "enqueuedTime"},
//    "Body": <JSON when contentType is application/json and contentEncoding utf-8, else base64>}
// A partition's batch is written once its oldest record has waited batchFrequencyInSeconds, or
// earlier when it reaches maxChunkSizeInBytes; a batch larger than a chunk is split. Files are
// named by the endpoint's fileNameFormat ({iothub} {partition} {YYYY} {MM} {DD} {HH} {mm}, from
// the first record's enqueued time, UTC) plus ".json" (".avro" for Avro: IoT Hub's record
// Microsoft.Azure.Devices.Message {EnqueuedTimeUtc: string, Properties: map<string>,
// SystemProperties: map<string>, Body: bytes|null}, codec null or deflate); a name already taken (a second batch in
// the same minute) gets "_1", "_2", ... before the extension. Each file is written to a temporary
// name, synced and renamed; then the partition's checkpoint (the next sequence number, in
// checkpoint.json beside the staging log) advances. A crash between the two writes the batch
// again under the next free name: at least once, as IoT Hub delivers.
//
// Owner: the composition root, which calls tick() from a periodic thread. Thread safety: one
// caller at a time. Blocks on file I/O.
#include "base/clock.hpp"
#include "base/error.hpp"
#include "domain/routing/config.hpp"
#include "domain/telemetry/message.hpp"
#include "storage/event_log.hpp"

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace hub::routing {

struct file_writer_options {
  storage_endpoint endpoint;
  std::string hub_name;                   // {iothub}
  std::filesystem::path dir;              // the files go below it
  std::filesystem::path checkpoint_file;  // where the next sequence of each partition is kept
};

// Whether this build writes Avro storage files (libavro, Debian's libavro-dev).
bool avro_supported() noexcept;

// One stored message as a line of a JSON-encoded storage file (no newline); nullopt when the
// record does not decode.
std::optional<std::string> storage_json_line(const storage::log_record& record);
std::string storage_json_line(const telemetry::message& m, std::int64_t enqueued_ms);

// fileNameFormat with its tokens replaced (no extension).
std::string expand_file_name(const std::string& format, std::string_view hub_name, std::uint32_t partition,
                             std::int64_t enqueued_ms);

class file_batch;

class file_writer {
 public:
  // Reads the checkpoint (a missing one: start at the oldest retained record).
  static result<std::unique_ptr<file_writer>> open(storage::event_log& log, file_writer_options opt, const clock& clk);

  // Writes the batches that are due. Returns the files written.
  result<std::size_t> tick();
  // Writes every pending record now, due or not (tests; hubctl).
  result<std::size_t> flush();

  const file_writer_options& options() const noexcept { return opt_; }
  std::int64_t next_sequence(std::uint32_t partition) const { return next_.at(partition); }

 private:
  file_writer(storage::event_log& log, file_writer_options opt, const clock& clk);
  result<std::size_t> write_partition(std::uint32_t partition, bool force);
  result<void> write_file(std::uint32_t partition, const file_batch& b);
  result<void> save_checkpoint();

  storage::event_log& log_;
  file_writer_options opt_;
  const clock& clock_;
  std::vector<std::int64_t> next_;
};

}  // namespace hub::routing
