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
