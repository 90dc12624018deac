# frozen_string_literal: true

require "minitest/autorun"
require "socket"
require "tmpdir"
require "timeout"
require "json"
require "digest"
require "fileutils"

ROOT = File.expand_path("..", __dir__)
require_relative "../support/local_processes"

UNICORN_BIN = LocalProcesses.unicorn_bin

# Waits for a condition on a server that keeps a log (#log), which a
# timeout shows.
module WaitsWithLog
  def wait_until(what, seconds)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
    until yield
      raise "timed out waiting for #{what}\n#{log}" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.05
    end
  end
end

# A real unicorn master started with the gem, on a free loopback port, with
# its own directory for the config, the log and temp files.
class UnicornServer
  include WaitsWithLog

  attr_reader :pid, :port, :dir

  READY_TIMEOUT = 20

  # With the front on, it answers its status page (STATUS_PATH) to this
  # machine, so a test can wait for what the front says it is doing.
  STATUS_PATH = "/_nightmare"

  def initialize(workers: 2, nightmare: "true", config: "", app: "probe.ru", wait_for_front: true)
    @workers = workers
    @dir = Dir.mktmpdir("nightmare-test")
    @port = LocalProcesses.free_port
    @nightmare = nightmare
    @wait_for_front = wait_for_front && nightmare != "false"
    status_page = nightmare == "false" || config.include?("status_path") ? "" : "status_path #{STATUS_PATH.inspect}"
    File.write(config_path, <<~CONFIG)
      require "nightmare"
      worker_processes #{workers}
      listen "127.0.0.1:#{@port}"
      stderr_path "#{log_path}"
      pid "#{@dir}/unicorn.pid"
      timeout 30
      nightmare #{nightmare}
      #{status_page}
      #{config}
    CONFIG
    FileUtils.cp(File.join(__dir__, "apps", app), File.join(@dir, "config.ru"))
  end

  def config_path = File.join(@dir, "unicorn.conf.rb")
  def log_path = File.join(@dir, "stderr.log")
  def log = File.exist?(log_path) ? File.read(log_path) : ""

  def start
    @pid = Process.spawn({ "RUBYLIB" => File.join(ROOT, "lib"), "RACK_ENV" => "none" },
                         RbConfig.ruby, UNICORN_BIN, "-c", config_path, "config.ru",
                         # not a tty, or Unicorn ignores WINCH
                         in: File::NULL, chdir: @dir, out: File.join(@dir, "stdout.log"),
                         err: File.join(@dir, "launch.log"))
    begin
      wait_until("unicorn ready (#{log_path})", READY_TIMEOUT) { ready? }
    rescue StandardError
      # No test will hold this server to stop it: stop it here.
      stop_after_failed_start
      raise
    end
    self
  end

  def ready?
    text = log
    raise "unicorn exited early: #{File.read(File.join(@dir, 'launch.log'))}\n#{text}" unless alive?(@pid)

    text.include?("master process ready") && text.scan(/worker=\d+ ready/).size >= @workers &&
      (!@wait_for_front || text.include?("nightmare front ready"))
  end

  # Takes over a master started outside #start (still this process's child).
  def adopt_child(pid)
    @pid = pid
  end

  # Takes over a master this process did not start (one USR2 exec'd).
  def adopt(pid)
    @adopted = pid
  end

  def stop
    return unless @pid

    if @adopted
      stop_adopted
    else
      signal_and_wait(@pid, :QUIT, 20) || signal_and_wait(@pid, :KILL, 5)
    end
    (descendants_seen || []).each { |child| Process.kill(:KILL, child) if alive?(child) }
    @pid = nil
  ensure
    FileUtils.rm_rf(@dir) unless ENV["KEEP_TEST_DIRS"]
  end

  def children
    return [] unless @pid

    LocalProcesses.children_of(@pid).tap { |found| (@descendants ||= []).concat(found) }
  end

  def descendants_seen = @descendants&.uniq

  # After USR2 to +old_master+: the new master's pid once it, its front and
  # +workers+ workers of its own are up (both generations' lines counted).
  def wait_for_new_master(old_master, workers:)
    new_master = nil
    wait_until("the new master, its front and workers", 30) do
      new_master = File.read(File.join(dir, "unicorn.pid")).to_i
      new_master != old_master && log.scan("nightmare front ready").size >= 2 &&
        log.scan(/worker=\d+ ready/).size >= 2 * workers
    rescue Errno::ENOENT
      false
    end
    new_master
  end

  # The master's private socket, where the front hands requests to workers.
  def worker_socket = log[/workers take requests from the front on (\S+)/, 1]

  def front_pid = children.find { |child| LocalProcesses.cmdline(child).include?("nightmare front") }
  def worker_pids = children.select { |child| LocalProcesses.cmdline(child).include?("worker[") }

  def alive?(pid)
    Process.kill(0, pid)
    Process.waitpid(pid, Process::WNOHANG).nil?
  rescue Errno::ESRCH, Errno::ECHILD
    false
  end


  private

  def stop_after_failed_start
    dir = @dir
    @dir = Dir.mktmpdir("nightmare-test") # stop removes it; the failed one's log stays for the message
    stop
  ensure
    @dir = dir
  end

  # Not our child: no waitpid, so watch /proc until it is gone.
  def stop_adopted
    [:QUIT, :KILL].each do |signal|
      (LocalProcesses.children_of(@adopted) + [@adopted]).each { |pid| (@descendants ||= []) << pid }
      Process.kill(signal, @adopted)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 20
      sleep 0.05 while File.exist?("/proc/#{@adopted}") && Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
      break unless File.exist?("/proc/#{@adopted}")
    end
  rescue Errno::ESRCH
    nil
  end

  def signal_and_wait(pid, signal, seconds)
    children
    Process.kill(signal, pid)
    Timeout.timeout(seconds) { Process.waitpid(pid) }
    true
  rescue Errno::ESRCH, Errno::ECHILD
    true
  rescue Timeout::Error
    false
  end

end

# Config files that must stop Unicorn at load with an ArgumentError that
# names the directive.
module ConfigRefusals
  # Unicorn's output for +config+ (after `listen`), which must not start.
  def load_config(dir, config)
    File.write(File.join(dir, "unicorn.conf.rb"), "require 'nightmare'\nlisten '127.0.0.1:0'\n#{config}\n")
    File.write(File.join(dir, "config.ru"), "run ->(_) { [200, {}, []] }\n")
    output = IO.popen({ "RUBYLIB" => File.join(ROOT, "lib") },
                      [RbConfig.ruby, UNICORN_BIN, "-c", "unicorn.conf.rb", "config.ru", err: %i[child out]],
                      chdir: dir, &:read)
    refute $?.success?, "#{config} must stop unicorn"
    output
  end

  # Each config of +refusals+ (config => message pattern) is refused so.
  def assert_configs_refused(dir, refusals)
    refusals.each do |config, message|
      output = load_config(dir, config)
      assert_match(/ArgumentError/, output, config)
      assert_match(message, output, config)
    end
  end
end

module HttpHelpers
  # Sends +raw+ bytes on a new connection and reads one response, framed
  # as HTTP says (Content-Length, chunked, or until close).
  def raw_request(raw, port: @server.port, timeout: 10, bind: nil)
    socket = connect(port, bind)
    socket.write(raw)
    read_response(socket, timeout, head: raw.start_with?("HEAD "))
  ensure
    socket&.close
  end

  def get(path, headers = {}, **options)
    head = headers.map { |k, v| "#{k}: #{v}\r\n" }.join
    raw_request("GET #{path} HTTP/1.1\r\nHost: test\r\n#{head}\r\n", **options)
  end

  # The front's figures now, from its status page (see UnicornServer).
  def figures(server = @server)
    get(UnicornServer::STATUS_PATH, {}, port: server.port).json
  end

  # Runs fresh-connection GETs while the block runs; returns how many were
  # served and how many failed. The block gets a proc that waits until
  # +count+ more have been served (traffic through whatever it just did).
  def with_steady_clients(port = @server.port)
    served = failures = 0
    running = true
    client = Thread.new do
      while running
        begin
          get("/", {}, timeout: 10, port: port).status == 200 ? served += 1 : failures += 1
        rescue StandardError
          failures += 1
        end
      end
    end
    served_more = lambda do |count|
      target = served + count
      @server.wait_until("#{count} more requests served", 30) { served >= target }
    end
    yield served_more
    running = false
    client.join
    [served, failures]
  end

  # A request that keeps a worker busy for +seconds+, marking which one.
  def hold(seconds, mark = mark_path)
    "/hold?seconds=#{seconds}&mark=#{mark}"
  end

  def mark_path = File.join(@server.dir, "held-by")

  # The pid of the worker inside a /hold request, or nil.
  def held_worker(mark = mark_path)
    File.exist?(mark) ? Integer(File.read(mark)) : nil
  rescue ArgumentError
    nil # being written
  end

  # Mounts a tmpfs of +size+ on +dir+, or skips saying what was missing.
  def mount_tmpfs(dir, size)
    skip "needs root to mount a #{size} tmpfs" unless Process.euid.zero?
    mount = ENV.fetch("PATH", "").split(":").map { |path| File.join(path, "mount") }.find { |path| File.executable?(path) }
    skip "needs the mount command (Debian package mount) for a #{size} tmpfs" unless mount
    return if system(mount, "-t", "tmpfs", "-o", "size=#{size}", "tmpfs", dir, err: File::NULL)

    skip "mount -t tmpfs failed here (a container without CAP_SYS_ADMIN?)"
  end

  # The server closed +socket+ (an EOF arrives within a few seconds).
  def assert_closed_by_server(socket, message = "the server closes the connection")
    assert socket.wait_readable(5), message
    assert_nil socket.read_nonblock(1, exception: false), message
  rescue Errno::ECONNRESET
    pass
  end

  def connect(port, bind = nil)
    bind ? Socket.tcp("127.0.0.1", port, bind, 0) : TCPSocket.new("127.0.0.1", port)
  end

  # Reads one response from +socket+; bytes read past it stay buffered for
  # the next call on the same socket (keep-alive, pipelining).
  def read_response(socket, timeout = 10, head: false)
    reader = (@readers ||= {})[socket] ||= ResponseReader.new(socket)
    reader.read_response(timeout, head: head)
  end
end

# Reads HTTP/1.1 responses off one socket, as a client would.
class ResponseReader
  def initialize(socket)
    @socket = socket
    @buffer = +""
  end

  def read_response(timeout, head: false)
    @deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    status, headers, raw_head = read_head
    body = if head || status == 204 || status == 304
             ""
           elsif headers["transfer-encoding"]&.match?(/chunked\z/i)
             read_chunked
           elsif headers["content-length"]
             take(Integer(headers["content-length"]))
           else
             read_until_close
           end
    Response.new(status, headers, body, raw_head)
  end

  private

  def read_head
    fill until (boundary = @buffer.index("\r\n\r\n"))
    raw_head = @buffer.slice!(0, boundary + 4)
    status_line, *lines = raw_head.split("\r\n")
    headers = lines.to_h { |line| line.split(": ", 2).then { |k, v| [k.downcase, v] } }
    [status_line[%r{\AHTTP/1\.\d (\d{3})}, 1].to_i, headers, raw_head]
  end

  def read_chunked
    body = +""
    loop do
      fill until (line_end = @buffer.index("\r\n"))
      size = @buffer.slice!(0, line_end + 2).to_i(16)
      if size.zero?
        fill until (trailer_end = @buffer.index("\r\n")) # no trailers from our servers
        @buffer.slice!(0, trailer_end + 2)
        return body
      end
      body << take(size)
      take(2)
    end
  end

  def take(count)
    fill while @buffer.bytesize < count
    @buffer.slice!(0, count)
  end

  def read_until_close
    fill while fill_possible?
    @buffer.slice!(0, @buffer.bytesize)
  end

  def fill_possible?
    !@eof
  end

  def fill
    raise EOFError, "connection closed mid-response: #{@buffer.inspect[0, 300]}" if @eof

    left = @deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
    raise Timeout::Error, "no complete response in time: #{@buffer.inspect[0, 300]}" if left <= 0
    # A TLS socket may hold decrypted bytes its descriptor no longer shows.
    decrypted = @socket.respond_to?(:pending) && @socket.pending.positive?
    return unless decrypted || @socket.to_io.wait_readable(left)

    case chunk = @socket.read_nonblock(65_536, exception: false)
    when nil then @eof = true
    when String then @buffer << chunk
    end
  rescue Errno::ECONNRESET
    @eof = true
  end
end

# A parsed HTTP response.
Response = Struct.new(:status, :headers, :body, :raw_head) do
  def json = JSON.parse(body)
end

# A fresh two-worker server with the front, per test.
module TwoWorkerServer
  include HttpHelpers

  def setup
    @server = UnicornServer.new(workers: 2).start
  end

  def teardown
    @server.stop
  end
end
