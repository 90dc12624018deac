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
