# frozen_string_literal: true

require "set"
require "socket"

# What the tests and the benchmark need to know about processes on this
# machine: where unicorn is, a free loopback port, a process's children,
# its command line and its peak memory. Reads /proc; Linux only.
module LocalProcesses
  module_function

  # Debian's gem metadata names a bin path that does not exist, so PATH is
  # searched too.
  def unicorn_bin
    candidates = [(Gem.bin_path("unicorn", "unicorn") rescue nil), # rubocop:disable Style/RescueModifier
                  *ENV.fetch("PATH", "").split(":").map { |dir| File.join(dir, "unicorn") }]
    candidates.compact.find { |path| File.file?(path) } or abort "unicorn is not installed"
  end

  HANDED_OUT = Set.new
  HANDED_OUT_LOCK = Mutex.new

  # A port nothing listens on right now, and never handed out before in
  # this process: the kernel may give a port just closed to the next
  # bind, and two calls for one server (a plain and an HTTPS listener)
  # then named the same port. (Another process could take it before it is
  # used; on loopback in a test run that does not happen.)
  def free_port
    HANDED_OUT_LOCK.synchronize do
      loop do
        server = TCPServer.new("127.0.0.1", 0)
        port = server.addr[1]
        server.close
        return port if HANDED_OUT.add?(port)
      end
    end
  end

  # A process that is exiting while /proc is read answers ESRCH rather
  # than ENOENT: both mean it is gone.
  def children_of(pid)
    File.read("/proc/#{pid}/task/#{pid}/children").split.map(&:to_i)
  rescue Errno::ENOENT, Errno::ESRCH
    []
  end

  def cmdline(pid)
    File.read("/proc/#{pid}/cmdline").tr("\0", " ")
  rescue Errno::ENOENT, Errno::ESRCH
    ""
  end

  # Peak resident memory of a process in KiB, from the kernel's high-water mark.
  def peak_rss_kib(pid)
    File.read("/proc/#{pid}/status")[/VmHWM:\s+(\d+)/, 1].to_i
  end
end
