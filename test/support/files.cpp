#include "test/support/files.hpp"

#include <fstream>
#include <sstream>
#include <system_error>
#include <vector>

namespace etcd_sync::testing {

namespace fs = std::filesystem;

std::string read_text_file(const fs::path& path, std::uintmax_t offset) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  in.seekg(static_cast<std::streamoff>(offset));
  if (!in) return {};
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::uintmax_t file_size_or_zero(const fs::path& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  return ec ? 0 : size;
}

std::string last_lines(std::string_view text, std::size_t max_lines,
                       const std::function<bool(std::string_view line)>& keep) {
  std::vector<std::string_view> kept;
  while (!text.empty()) {
    const auto end = text.find('\n');
    const auto line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    if (!keep || keep(line)) kept.push_back(line);
  }
  std::string out;
  for (std::size_t i = kept.size() > max_lines ? kept.size() - max_lines : 0; i < kept.size(); ++i)
    out.append(kept[i]).push_back('\n');
  return out;
}

std::string tail_of_file(const fs::path& path, std::size_t max_lines) {
  return last_lines(read_text_file(path), max_lines);
}

}  // namespace etcd_sync::testing
