# frozen_string_literal: true

require "digest"
require "socket"

module Bench
  # The middle value (the mean of the middle two for an even count).
  def self.median(values)
    sorted = values.sort
    sorted.size.odd? ? sorted[sorted.size / 2] : (sorted[sorted.size / 2 - 1] + sorted[sorted.size / 2]) / 2.0
  end

  # What wrk measured for one target in one phase.
  Result = Struct.new(:requests_per_second, :p99_ms, :requests, :failed, keyword_init: true) do
    def to_s = format("%9.0f req/s  p99 %8.1f ms  failed %d of %d", requests_per_second, p99_ms, failed, requests)
  end

  # Fast clients: wrk with keep-alive, bounded by its duration.
  module Wrk
    module_function

    def run(url, seconds:, connections:, threads: 2, timeout: 5, headers: {})
      header_args = headers.flat_map { |name, value| ["-H", "#{name}: #{value}"] }
      output = IO.popen(["wrk", "-t#{threads}", "-c#{connections}", "-d#{seconds}s", "--timeout", "#{timeout}s",
                         "--latency", *header_args, url], err: %i[child out], &:read)
      parse(output)
    end

    def parse(output)
      errors = output[/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/] ? $~.captures.map(&:to_i).sum : 0
      non_2xx = output[/Non-2xx or 3xx responses: (\d+)/, 1].to_i
      requests = output[/(\d+) requests in/, 1].to_i
      Result.new(requests_per_second: output[/Requests\/sec:\s+([\d.]+)/, 1].to_f,
                 p99_ms: milliseconds(output[/^\s+99%\s+(\S+)/, 1]),
                 requests: requests + errors, failed: errors + non_2xx)
    end

    def milliseconds(text)
      return Float::NAN unless text

      value = text.to_f
      case text
      when /us\z/ then value / 1000
      when /ms\z/ then value
      when /m\z/ then value * 60_000
      else value * 1000 # seconds
      end
    end
  end

  # An attack running in the background for a bounded time.
  class SlowAttack
    # Slow readers (-X) advertise a window of 1 to 512 bytes and read 32
    # bytes a second; the others send a little every 5 seconds.
    MODE_OPTIONS = {
      "-X" => %w[-w 1 -y 512 -n 1 -z 32 -k 1],
      "-H" => %w[-i 5 -x 24],
      "-B" => %w[-i 5 -x 24 -s 65536],
    }.freeze

    def initialize(mode, url, connections:, seconds:, log:)
      @command = ["slowhttptest", mode, "-c", connections.to_s, "-r", "250", "-l", seconds.to_s, "-p", "5",
                  *MODE_OPTIONS.fetch(mode), "-u", url]
      @log = log
    end

    def start
      @pid = Process.spawn(*@command, out: @log, err: %i[child out])
      self
    end

    def stop
      Process.kill(:INT, @pid)
      Process.waitpid(@pid)
    rescue Errno::ESRCH, Errno::ECHILD
      nil
    end
  end

  # One large download with curl (certificates not checked: the benchmark
  # made them); seconds taken, or nil if the size was wrong.
  module Download
    module_function

    def run(url, bytes)
      output = IO.popen(["curl", "-sk", "--http1.1", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
                        err: File::NULL, &:read)
      size, seconds = output.split
      size.to_i == bytes ? seconds.to_f : nil
    end
  end

  # HTTP/2 clients: h2load, +streams+ at once on each connection, bounded
  # by its duration.
  module H2load
    module_function

    def run(url, seconds:, connections:, streams:)
      output = IO.popen(["h2load", "-c", connections.to_s, "-m", streams.to_s, "-D", seconds.to_s,
                         "--warm-up-time=1", url], err: %i[child out], &:read)
      done = output[/requests: \d+ total, \d+ started, (\d+) done/, 1].to_i
      failed = output[/(\d+) failed, (\d+) errored/] ? $1.to_i + $2.to_i : done
      non_2xx = output[/status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/] ? $~.captures.map(&:to_i).sum : 0
      Result.new(requests_per_second: output[/finished in [\d.]+\w*, ([\d.]+) req\/s/, 1].to_f,
                 p99_ms: Float::NAN, requests: done, failed: failed + non_2xx)
    end
  end

  # One large upload; returns seconds taken, or nil if the reply was wrong.
  module Upload
    module_function

    def run(port, bytes)
      piece = Random.new(7).bytes(1 << 20)
      expected = Digest::SHA256.new
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      socket = TCPSocket.new("127.0.0.1", port)
      socket.write("POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: #{bytes}\r\nConnection: close\r\n\r\n")
      (bytes >> 20).times do
        socket.write(piece)
        expected << piece
      end
      reply = socket.read
      seconds = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
      # nginx re-frames the close-delimited reply as chunked: look inside.
      reply.include?("#{bytes} #{expected.hexdigest}") ? seconds : nil
    rescue SystemCallError
      nil
    ensure
      socket&.close
    end
  end
end
