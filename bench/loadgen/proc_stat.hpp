#pragma once
// CPU time from /proc: utime + stime (fields 14 and 15) of a stat file, in seconds. The process's
// own (/proc/PID/stat) or one thread's (/proc/self/task/TID/stat).
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

#include <unistd.h>

namespace loadgen {

inline double stat_cpu_seconds(const std::string& stat_path) {
  std::ifstream in(stat_path);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = content.rfind(')');  // the command name may hold spaces and parentheses
  if (close == std::string::npos) return 0;
  std::istringstream rest(content.substr(close + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace loadgen
