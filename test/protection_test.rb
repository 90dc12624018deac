# frozen_string_literal: true

require_relative "test_helper"

# What a hostile client can make the front hold is counted and bounded:
# each test is an attack from the 2026-12 review, with the figure it
# moved before the fix in its comment.
class ChunkedBodyOfOneByteChunksTest < Minitest::Test
  include TwoWorkerServer

  MIB = 1024 * 1024

  # 16 clients at once, each 3 MB on the wire of `1\r\na\r\n` (500 kB
  # decoded, past client_body_buffer_size, so a temp file): each decoded
  # byte was a write job of its own, about 100 bytes of heap while it
  # waited, and the front's peak RSS grew by about 200 MiB.
  def test_one_byte_chunks_cost_the_front_no_more_than_an_ordinary_upload
    before = LocalProcesses.peak_rss_kib(@server.front_pid)
    chunks = 500_000
    clients = Array.new(16) { Thread.new { upload_in_one_byte_chunks(chunks) } }
    assert_equal ["#{chunks} #{Digest::SHA256.hexdigest('a' * chunks)}"], clients.map(&:value).uniq

    grown = LocalProcesses.peak_rss_kib(@server.front_pid) - before
    assert_operator grown, :<, 32 * 1024, "front peak RSS grew by #{grown} KiB"
  end

  private

  def upload_in_one_byte_chunks(count)
    socket = connect(@server.port)
    socket.write("POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = "1\r\na\r\n" * 10_000
    (count / 10_000).times { socket.write(piece) }
    socket.write("0\r\n\r\n")
    response = read_response(socket, 60)
    assert_equal 200, response.status
    response.body
  ensure
    socket&.close
  end
end

# The access log's queue is bounded in bytes: a client chooses how long its
# line is, and a log disk that stops must not grow the front.
class StuckAccessLogTest < Minitest::Test
  include HttpHelpers

  def setup
    @dir = Dir.mktmpdir("nightmare-fifo")
    @fifo = File.join(@dir, "access.log")
    File.mkfifo(@fifo)
    # A reader that never reads: once the pipe's 64 KiB are full, the
    # front's log writer blocks as on a hung disk.
    @stuck_reader = File.open(@fifo, File::RDONLY | File::NONBLOCK)
    @server = UnicornServer.new(workers: 2, nightmare: "", config: "nightmare access_log: #{@fifo.inspect}").start
  end

  def teardown
    @server.stop
    @stuck_reader.close
    FileUtils.rm_rf(@dir)
  end

  # 1,200 requests whose User-Agent and Referer are 8,000 quotes each: a
  # line of 64 KiB once escaped. The queue counted lines (32,768), so the
  # front held every one of them: about 75 MiB here, 2.9 GB at the limit.
  def test_a_stuck_log_disk_costs_the_front_a_few_mib_and_every_request_is_served
    before = LocalProcesses.peak_rss_kib(@server.front_pid)
    quotes = '"' * 8000
    statuses = Array.new(4) do
      Thread.new do
        socket = connect(@server.port)
        Array.new(300) do
          socket.write("GET / HTTP/1.1\r\nHost: t\r\nUser-Agent: #{quotes}\r\nReferer: #{quotes}\r\n\r\n")
          read_response(socket, 20).status
        end
      ensure
        socket&.close
      end
    end.flat_map(&:value)
    assert_equal [200], statuses.uniq

    grown = LocalProcesses.peak_rss_kib(@server.front_pid) - before
    assert_operator grown, :<, 16 * 1024, "front peak RSS grew by #{grown} KiB"
    stats = figures
    assert_operator stats["access_log_lines_lost"], :>, 1000, stats.inspect
    assert_operator stats["access_log_bytes_waiting"], :<=, 4 * 1024 * 1024
    @server.wait_until("the drop said in the log", 5) { @server.log.include?("access log lines are dropped") }
    assert_equal 1, @server.log.scan("access log lines are dropped").size, "said once a minute, not per line"
  end
end

# A spent temp budget: clients that never read must not hold the workers.
class SpentTempBudgetTest < Minitest::Test
  include HttpHelpers

  MB = 1_000_000

  def setup
    @server = UnicornServer.new(workers: 2, nightmare: "", config: 'nightmare temp_path_max_size: "64m"').start
  end

  def teardown
    @non_readers&.each(&:close)
    @server.stop
  end

  # Three clients ask for 50 MB each and read nothing: the temp files
  # stopped at 64 MiB, both workers then waited on the front until
  # Unicorn's 30 s timeout killed them, and a small GET waited 29 s.
  def test_clients_that_never_read_are_shed_and_the_workers_serve_others
    @non_readers = Array.new(3) do
      socket = connect(@server.port)
      socket.setsockopt(Socket::SOL_SOCKET, Socket::SO_RCVBUF, 4096)
      socket.write("GET /bytes?#{50 * MB} HTTP/1.1\r\nHost: t\r\n\r\n")
      socket
    end
    @server.wait_until("the temp budget spent", 10) { figures["temp_file_bytes"] >= 60 * 1024 * 1024 }

    assert_equal 200, get("/", {}, timeout: 15).status, "a small GET, well before Unicorn's timeout"
    download = get("/bytes?#{20 * 1024 * 1024}", {}, timeout: 15)
    assert_equal [200, 20 * 1024 * 1024], [download.status, download.body.bytesize]
    stats = figures
    assert_operator stats["clients_shed"], :>=, 1, stats.inspect
    assert_match(/temp_path_max_size \(67108864 bytes\) is spent and a worker waited on it [\d.]+s: shed client 127\.0\.0\.1/,
                 @server.log)
    refute_match(/timeout \(\d+s > \d+s\), killing/, @server.log, "no worker waited for Unicorn's timeout")
    cut = @non_readers.count { |socket| reset?(socket) }
    assert_equal figures["clients_shed"], cut, "each shed client is reset, and only those"
  end

  private

  # The server reset the connection (what the client was sent is dropped
  # with it) rather than leave it open: a client still served reads on
  # (slowly, through its small window) until the time is up.
  def reset?(socket)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 3
    while Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
      next unless socket.wait_readable(0.5)
      return false if socket.read_nonblock(1 << 20, exception: false).nil?
    end
    false
  rescue Errno::ECONNRESET
    true
  end
end

# send_min_rate: a client reading far below it is closed; a stream that
# waits on the app is not the client's slowness.
class SendMinRateTest < Minitest::Test
  include HttpHelpers

  def setup
    @server = UnicornServer.new(workers: 2, nightmare: "", app: "responses.ru",
                                config: 'nightmare send_timeout: "2s", send_min_rate: "2m"').start
  end

  def teardown
    @server.stop
  end

  # It takes something every fraction of a second, so send_timeout alone
  # would never cut it: about 320 kB/s against a minimum of 2 MiB/s.
  def test_a_reader_far_below_send_min_rate_is_closed
    socket = connect(@server.port)
    socket.write("GET /big?mib=50 HTTP/1.1\r\nHost: t\r\n\r\n")
    received = 0
    closed = Timeout.timeout(60) do
      loop do
        chunk = socket.read_nonblock(65_536, exception: false)
        break true if chunk.nil?

        received += chunk.bytesize if chunk.is_a?(String)
        sleep 0.2
      end
    rescue Errno::ECONNRESET
      true
    end
    assert closed
    assert_operator received, :<, 50 << 20, "cut before the end"
    @server.wait_until("the log line", 5) { @server.log.include?("slower than send_min_rate (2097152 bytes/s") }
    assert_equal 1, figures["slow_readers_closed"]
  ensure
    socket&.close
  end

  def test_a_stream_that_waits_on_the_app_is_not_cut
    flag = File.join(@server.dir, "flag")
    socket = connect(@server.port)
    socket.write("GET /stream?flag=#{flag} HTTP/1.1\r\nHost: t\r\n\r\n")
    reader = ResponseReader.new(socket)
    Thread.new { sleep 5; File.write(flag, "") } # over twice send_timeout, with nothing to take
    response = reader.read_response(20)
    assert_equal [200, "first\nlast\n"], [response.status, response.body]
    assert_equal 0, figures["slow_readers_closed"]
  ensure
    socket&.close
  end
end

# A worker waiting on a spent budget that no one can be shed for (an upload
# holds all of it) still has its client's send_timeout: the tick that
# pumped such a connection skipped its deadline, so the worker waited for
# Unicorn's timeout.
class BudgetHeldByAnUploadTest < Minitest::Test
  include HttpHelpers

  def setup
    config = 'nightmare temp_path_max_size: "1m", client_body_buffer_size: "4k", send_timeout: "2s"'
    @server = UnicornServer.new(workers: 1, nightmare: "", config: config).start
  end

  def teardown
    [@uploader, @non_reader].each { |socket| socket&.close }
    @server.stop
  end

  def test_a_non_reader_waiting_on_the_budget_is_cut_at_send_timeout_and_frees_the_worker
    @uploader = connect(@server.port)
    @uploader.write("POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    16.times { @uploader.write("10000\r\n#{'u' * 65_536}\r\n") } # 1 MiB, and the body goes on
    @server.wait_until("the upload holding the budget", 10) { figures["temp_file_bytes"] >= 1 << 20 }

    @non_reader = connect(@server.port)
    @non_reader.setsockopt(Socket::SOL_SOCKET, Socket::SO_RCVBUF, 4096)
    @non_reader.write("GET /bytes?50000000 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_equal 200, get("/", {}, timeout: 15).status, "the only worker is freed well before Unicorn's timeout"
    # The front's line reaches the log through the master, maybe after the GET.
    cut = /took none of its response for send_timeout \(2(\.0)?s\)/
    @server.wait_until("the send_timeout line", 5) { @server.log.match?(cut) }
    refute_match(/timeout \(\d+s > \d+s\), killing/, @server.log)
  end
end
