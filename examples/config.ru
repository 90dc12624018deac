# frozen_string_literal: true

# A small app to try Nightmare! with: GET / says hello, POST /upload reads
# the whole body and answers its size and SHA-256, GET /slow takes a second.
require "digest"

run lambda { |env|
  case [env["REQUEST_METHOD"], env["PATH_INFO"]]
  when ["POST", "/upload"], ["PUT", "/upload"]
    digest = Digest::SHA256.new
    size = 0
    input = env["rack.input"]
    while (chunk = input.read(65_536))
      digest << chunk
      size += chunk.bytesize
    end
    [200, { "content-type" => "text/plain" }, ["#{size} #{digest.hexdigest}\n"]]
  when ["GET", "/slow"]
    sleep 1
    [200, { "content-type" => "text/plain" }, ["slept 1s\n"]]
  else
    body = "Hello from worker #{Process.pid} to #{env['REMOTE_ADDR']}\n"
    [200, { "content-type" => "text/plain", "content-length" => body.bytesize.to_s }, [body]]
  end
}
