# frozen_string_literal: true

# Responses of every shape, for the response-path tests.
use Rack::Head

# Waits (a bounded while) until the test says it saw the previous chunk.
wait_for_flag = lambda do |path|
  deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 20
  sleep 0.01 until File.exist?(path) || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
end

run lambda { |env|
  params = Rack::Utils.parse_query(env["QUERY_STRING"])
  case env["PATH_INFO"]
  when "/big"
    mib = Integer(params.fetch("mib", "1"))
    piece = "x" * 65_536
    body = Enumerator.new { |out| (mib * 16).times { out << piece } }
    [200, { "content-type" => "application/octet-stream", "content-length" => (mib << 20).to_s }, body]
  when "/stream"
    body = Enumerator.new do |out|
      out << "first\n"
      wait_for_flag.call(params.fetch("flag"))
      out << "last\n"
    end
    [200, { "content-type" => "text/plain" }, body]
  when "/sse"
    body = Enumerator.new do |out|
      out << "data: 1\n\n"
      wait_for_flag.call(params.fetch("flag"))
      out << "data: 2\n\n"
    end
    [200, { "content-type" => "text/event-stream", "x-accel-buffering" => "no" }, body]
  when "/echo"
    # A protocol switch the way Unicorn apps do it: a full rack.hijack.
    io = env["rack.hijack"].call
    io.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
    while (line = io.gets)
      io.write(line)
      break if line == "bye\n"
    end
    io.close
    [200, {}, []]
  when %r{\A/status/(\d+)\z}
    [Integer($1), {}, []]
  when "/pid"
    [200, { "content-type" => "text/plain", "content-length" => Process.pid.to_s.bytesize.to_s }, [Process.pid.to_s]]
  else
    [200, { "content-type" => "text/plain", "content-length" => "3" }, ["ok\n"]]
  end
}
