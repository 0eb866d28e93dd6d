// Reading the files servers and services write: logs for error messages, sizes for log marks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace etcd_sync::testing {

/// The file's contents from byte `offset` on; "" if it cannot be read.
std::string read_text_file(const std::filesystem::path& path, std::uintmax_t offset = 0);

/// The file's size in bytes, or 0 if it does not exist (yet): where a log's new lines will start.
std::uintmax_t file_size_or_zero(const std::filesystem::path& path);

/// The last `max_lines` lines of `text` for which `keep` holds (every line when `keep` is empty),
/// each ended by a newline: the end of a log, for error messages.
std::string last_lines(std::string_view text, std::size_t max_lines,
                       const std::function<bool(std::string_view line)>& keep = {});

/// The last `max_lines` lines of a file, for error messages.
std::string tail_of_file(const std::filesystem::path& path, std::size_t max_lines = 40);

}  // namespace etcd_sync::testing
