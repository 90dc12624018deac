# frozen_string_literal: true

require "etc"

module Bench
  # What the figures were measured on, for the head of each report.
  def self.machine
    memory_gib = (File.read("/proc/meminfo")[/MemTotal:\s+(\d+)/, 1].to_i / 1024.0 / 1024).round
    debian = File.exist?("/etc/debian_version") ? File.read("/etc/debian_version").strip : "?"
    "#{Etc.nprocessors} cores, #{memory_gib} GiB, Debian #{debian}, Linux #{`uname -r`.strip}"
  end
end
