# frozen_string_literal: true

require_relative "test_helper"

# Large bodies go to temp files, not the front's memory, and arrive whole.
class UploadTest < Minitest::Test
  include HttpHelpers

  MIB = 1024 * 1024
  UPLOAD_SIZE = 100 * MIB

  def setup
    @server = UnicornServer.new(workers: 2, nightmare: "", config: 'nightmare client_max_body_size: "200m"').start
  end

  def teardown
    @server.stop
  end

  def test_100_mib_uploads_arrive_byte_exact_while_the_front_stays_small
    expected = upload(chunked: false)
    assert_equal "#{UPLOAD_SIZE} #{expected}", @last_response.body
    expected = upload(chunked: true)
    assert_equal "#{UPLOAD_SIZE} #{expected}", @last_response.body

    peak = LocalProcesses.peak_rss_kib(@server.front_pid)
    assert_operator peak, :<, 64 * 1024, "front peak RSS #{peak} KiB"
  end

  private

  # Streams UPLOAD_SIZE pseudo-random bytes in 1 MiB pieces; returns their SHA-256.
  def upload(chunked:)
    random = Random.new(chunked ? 2 : 1)
    digest = Digest::SHA256.new
    socket = connect(@server.port)
    framing = chunked ? "Transfer-Encoding: chunked" : "Content-Length: #{UPLOAD_SIZE}"
    socket.write("POST /upload HTTP/1.1\r\nHost: t\r\n#{framing}\r\n\r\n")
    (UPLOAD_SIZE / MIB).times do
      piece = random.bytes(MIB)
      digest << piece
      socket.write(chunked ? "#{MIB.to_s(16)}\r\n#{piece}\r\n" : piece)
    end
    socket.write("0\r\n\r\n") if chunked
    @last_response = read_response(socket, 60)
    assert_equal 200, @last_response.status
    digest.hexdigest
  ensure
    socket&.close
  end
end

# A full temp_path fails the request that needed it, and nothing else.
class FullTempPathTest < Minitest::Test
  include HttpHelpers

  def setup
    @mount = Dir.mktmpdir("nightmare-tmpfs")
    mount_tmpfs(@mount, "1m")
    # No total for temp files: the disk itself runs out here.
    config = %(nightmare client_max_body_size: "10m", client_body_buffer_size: "4k", temp_path: "#{@mount}", ) +
             %(temp_path_max_size: 0)
    @server = UnicornServer.new(workers: 1, nightmare: "", config: config).start
  end

  def teardown
    @server&.stop
    system("umount", @mount, err: File::NULL)
    Dir.rmdir(@mount)
  end

  def test_body_too_big_for_the_temp_path_gets_500_and_the_front_carries_on
    front = @server.front_pid
    body = "x" * (3 * 1024 * 1024)
    response = raw_request("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: #{body.bytesize}\r\n\r\n#{body}")
    assert_equal 500, response.status
    line = /ERROR -- : nightmare: cannot spool the request body .* to temp_path #{Regexp.escape(@mount)}: No space left/
    @server.wait_until("the full temp_path log line", 5) { @server.log.match?(line) }

    small = "y" * 100_000
    response = raw_request("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: #{small.bytesize}\r\n\r\n#{small}")
    assert_equal "#{small.bytesize} #{Digest::SHA256.hexdigest(small)}", response.body
    assert_equal front, @server.front_pid, "the front survived"
    assert_empty Dir.children(@mount), "no temp file is left behind"
  end
end

# temp_path_max_size: slow readers of large responses fill the temp files
# up to the total and no further, uploads that need a file get 503 with
# Retry-After meanwhile, and work again once a reader is gone.
class TempBudgetTest < Minitest::Test
  include HttpHelpers

  BUDGET = 2 << 20

  def setup
    @mount = Dir.mktmpdir("nightmare-tmpfs")
    mount_tmpfs(@mount, "16m")
    config = %(nightmare client_max_body_size: "10m", client_body_buffer_size: "4k", temp_path: "#{@mount}", ) +
             %(temp_path_max_size: #{BUDGET})
    @server = UnicornServer.new(workers: 2, nightmare: "", config: config).start
  end

  def teardown
    @reader&.close
    @server&.stop
    system("umount", @mount, err: File::NULL)
    Dir.rmdir(@mount)
  end

  def test_slow_readers_stop_at_the_budget_and_uploads_get_503_until_room_returns
    @reader = TCPSocket.new("127.0.0.1", @server.port)
    @reader.write("GET /bytes?#{50 << 20} HTTP/1.1\r\nHost: t\r\n\r\n") # and never read
    upload = "u" * (1 << 20)
    refused = nil
    @server.wait_until("an upload refused for want of temp space", 15) do
      response = raw_request("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: #{upload.bytesize}\r\n\r\n#{upload}")
      next refused = response if response.status == 503

      assert_equal 200, response.status, "taken while there is room"
      sleep 0.1
      false
    end
    assert_equal "5", refused.headers["retry-after"]
    assert_operator used_bytes, :<=, BUDGET + (512 << 10), "the slow reader's file stopped at the total"
    line = /ERROR -- : nightmare: temp files hold \d+ of temp_path_max_size #{BUDGET} bytes/
    @server.wait_until("the front's line about the budget", 5) { @server.log.match?(line) }

    small = "s" * 1000
    response = raw_request("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: #{small.bytesize}\r\n\r\n#{small}")
    assert_equal "#{small.bytesize} #{Digest::SHA256.hexdigest(small)}", response.body, "a body in memory still passes"

    @reader.close
    @reader = nil
    @server.wait_until("uploads taken again", 10) do
      raw_request("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: #{upload.bytesize}\r\n\r\n#{upload}").status == 200
    end
  end

  def test_a_body_announced_larger_than_the_budget_is_refused_before_100_continue
    response = raw_request("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: #{3 << 20}\r\n" \
                           "Expect: 100-continue\r\n\r\n")
    assert_equal 503, response.status, "no 100 Continue for a body there is no room for"
    assert_equal "5", response.headers["retry-after"]
  end

  private

  def used_bytes
    Integer(`df --output=used -B1 #{@mount}`.lines.last)
  end
end
